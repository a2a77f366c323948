"""Hybrid ResNet + ViT against timm's own registered hybrids: same weights, same function.

Random weights (no download) in every tensor, both backbone layouts (R50 stages and stem only),
square and non-square inputs. Logits, the [CLS] embedding and every attention map must agree to
1e-5 relative error in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from model_export.model import ViT, preset
from tests.model_export.timm_reference import import_timm, rel_error, timm_outputs

Randomise = Callable[[nn.Module], nn.Module]
TOLERANCE = 1e-5

CASES = {  # id: (timm model, our preset, (H, W), depth: 2 keeps the B-wide R50 cases quick)
    "r50-square": ("vit_base_r50_s16_224", "r50-vit-b16", (224, 224), 2),
    "r50-non-square": ("vit_base_r50_s16_224", "r50-vit-b16", (64, 96), 2),
    "stem-square": ("vit_tiny_r_s16_p8_224", "r-vit-ti32", (224, 224), 12),
    "stem-non-square": ("vit_tiny_r_s16_p8_224", "r-vit-ti32", (96, 160), 12),
}


def timm_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # timm's stem-only backbone *is* the stem (patch_embed.backbone.conv); ours nests it.
    return {
        k.replace("patch_embed.backbone.conv.", "patch_embed.backbone.stem.conv.").replace(
            "patch_embed.backbone.norm.", "patch_embed.backbone.stem.norm."
        ): v
        for k, v in state.items()
    }


@pytest.mark.parametrize("case", CASES)
def test_hybrid_matches_timm(case: str, randomise: Randomise) -> None:
    timm_name, ours, (h, w), depth = CASES[case]
    timm = import_timm()
    reference = timm.create_model(timm_name, pretrained=False, img_size=(h, w), num_classes=10)
    reference = randomise(reference)
    model = ViT(preset(ours, image_size=(h, w), depth=depth, num_classes=10)).eval()
    model.load_state_dict(timm_to_ours(reference.state_dict()))
    pixels = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))

    logits, embedding, attentions = timm_outputs(reference, pixels)
    with torch.no_grad():
        fast = model(pixels)
        explained = model(pixels, attention=True)
    assert explained.attentions is not None
    assert explained.attentions.shape == attentions.shape  # (B, L, H, N+1, N+1)
    assert attentions.shape[-1] == 1 + model.config.grid[0] * model.config.grid[1]
    assert rel_error(fast.logits, logits) <= TOLERANCE
    assert rel_error(fast.embedding, embedding) <= TOLERANCE
    assert rel_error(explained.logits, logits) <= TOLERANCE
    for layer in range(attentions.shape[1]):
        assert rel_error(explained.attentions[:, layer], attentions[:, layer]) <= TOLERANCE, layer
