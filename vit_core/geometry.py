"""How an image becomes tokens, in one place for the model (ViTConfig), the bundle
(BundleManifest) and the image transform: a size is S (square) or (H, W), and an H×W input read
`stride` pixels per token side (patch size × a hybrid backbone's stride) is a rows×cols grid. A
box is the part of a picture the model sees, wherever a picture's pixels are counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

Size = int | tuple[int, int]  # S, or (H, W)
Box = tuple[float, float, float, float]  # (left, top, right, bottom) in an image's pixels


def hw(size: Size) -> tuple[int, int]:
    """(H, W) of a size."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def token_grid(size: Size, stride: int) -> tuple[int, int]:
    """(rows, cols) of tokens, row-major as the patches are numbered."""
    h, w = hw(size)
    return h // stride, w // stride


def fits(size: Size, stride: int) -> bool:
    """Whether the tokens tile the image exactly (both sides multiples of the stride)."""
    return all(side % stride == 0 for side in hw(size))


class TokenGrid:
    """image_hw, grid and num_patches of whatever has an `image_size` and a `stride` (ViTConfig,
    BundleManifest): mixed in, so the two cannot come to disagree."""

    if TYPE_CHECKING:
        image_size: Size

        @property
        def stride(self) -> int: ...

    @property
    def image_hw(self) -> tuple[int, int]:
        return hw(self.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patch tokens."""
        return token_grid(self.image_size, self.stride)

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols
