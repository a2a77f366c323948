"""Named configurations: the paper's Table 1 (plus DeiT's Ti and S) and its hybrid ResNet + ViTs.

preset("vit-b16")        ViT-B/16 at 224 px, 1000 classes
preset("r50-vit-b16")    R50+ViT-B/16: ResNet-50 stages (3, 4, 9), 1×1 patches on its map
preset(name, image_size=(384, 512), num_classes=10, ...)   any ViTConfig field overridden
"""

from __future__ import annotations

from typing import Any

from model_export.model.vit import ViTConfig

# The paper's Table 1 (B, L, H) plus DeiT's Ti and S, which the ecosystem treats as the same family.
_SIZES = {  # name: (D, L, heads, MLP)
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
    "h": (1280, 32, 16, 5120),
}
PRESETS = {
    f"vit-{size}{patch}": (dim, depth, heads, mlp, patch)
    for size, (dim, depth, heads, mlp) in _SIZES.items()
    for patch in (14, 16, 32)
}


# The paper's hybrids as vit_jax and timm name them: ResNet stages, then the ViT reads its map with
# patches of P_map (1 on R50/R26; 8 on the stem-only Ti). The name gives the effective stride.
HYBRID_PRESETS = {  # name: (ViT size, backbone stages, patch size on the feature map)
    "r50-vit-b16": ("b", (3, 4, 9), 1),  # R50+ViT-B_16: stride 16, 14×14 tokens at 224
    "r50-vit-l32": ("l", (3, 4, 6, 3), 1),  # R50+ViT-L_32: stride 32
    "r26-vit-s32": ("s", (2, 2, 2, 2), 1),  # R26+ViT-S_32 (AugReg)
    "r26-vit-b32": ("b", (2, 2, 2, 2), 1),  # R26+ViT-B_32 (AugReg)
    # Stem only (stride 4) with 8×8 patches on its map: 32 px per token, a 7×7 grid at 224 (timm
    # registers it as vit_tiny_r_s16_p8_224).
    "r-vit-ti32": ("ti", (), 8),
}


def preset(name: str, **overrides: Any) -> ViTConfig:
    """ViTConfig for a paper preset such as "vit-b16" or "r50-vit-b16" (224 px, 1000 classes)."""
    if name in HYBRID_PRESETS:
        size, stages, patch = HYBRID_PRESETS[name]
        dim, depth, heads, mlp = _SIZES[size]
        base: dict[str, Any] = dict(backbone=stages, patch_size=patch)
    elif name in PRESETS:
        dim, depth, heads, mlp, patch = PRESETS[name]
        base = dict(patch_size=patch)
    else:
        names = ", ".join(sorted([*PRESETS, *HYBRID_PRESETS]))
        raise ValueError(f"unknown preset {name!r}; choose from {names}")
    base.update(dim=dim, depth=depth, heads=heads, mlp_dim=mlp)
    return ViTConfig(**{**base, **overrides})
