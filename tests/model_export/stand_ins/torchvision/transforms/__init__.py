from torchvision._unavailable import unavailable_class
from torchvision.transforms.functional import InterpolationMode

ToTensor = unavailable_class("transforms.ToTensor")  # timm subclasses it (MaybeToTensor)
# open_clip imports these when it loads; its image towers never use them.
Normalize = unavailable_class("transforms.Normalize")
Compose = unavailable_class("transforms.Compose")
RandomResizedCrop = unavailable_class("transforms.RandomResizedCrop")
Resize = unavailable_class("transforms.Resize")
CenterCrop = unavailable_class("transforms.CenterCrop")
ColorJitter = unavailable_class("transforms.ColorJitter")
Grayscale = unavailable_class("transforms.Grayscale")

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Grayscale",
    "InterpolationMode",
    "Normalize",
    "RandomResizedCrop",
    "Resize",
    "ToTensor",
]
