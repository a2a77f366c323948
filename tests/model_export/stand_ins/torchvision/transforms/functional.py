import enum


class InterpolationMode(enum.Enum):
    # Plain names: timm builds a name table from these members when it loads, nothing more.
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"
