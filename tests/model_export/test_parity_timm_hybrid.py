"""Hybrid ResNet + ViT checkpoints from timm load to the function timm's own models compute.

timm's registered hybrids, random weights in every tensor (no download), saved the ways timm
checkpoints travel (.safetensors, .pth, a hub folder with config.json and model.safetensors or
pytorch_model.bin), both backbone layouts (R50 stages; stem only), square and non-square inputs.
Logits, the [CLS] embedding and every attention map agree to 1e-5 relative error in float32.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model_export.formats.checkpoints import CheckpointError, build_model, load_checkpoint
from model_export.model.vit import ViTConfig
from tests.model_export.timm_reference import import_timm, rel_error, timm_outputs

Randomise = Callable[[nn.Module], nn.Module]
TOLERANCE = 1e-5

CASES = {  # id: (timm model, (H, W), depth: 2 keeps the B-wide R50 cases quick, how it is saved)
    "r50-square": ("vit_base_r50_s16_224", (224, 224), 2, "model.safetensors"),
    "r50-non-square": ("vit_base_r50_s16_224", (64, 96), 2, "folder/model.safetensors"),
    "stem-square": ("vit_tiny_r_s16_p8_224", (224, 224), 12, "weights.pth"),
    "stem-non-square": ("vit_tiny_r_s16_p8_224", (96, 160), 12, "folder/pytorch_model.bin"),
}


def save_timm(model: nn.Module, name: str, size: tuple[int, int], where: Path) -> Path:
    """model's state dict at `where`; in a folder, beside timm's hub config.json."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.suffix == ".safetensors":
        save_file(state, str(where))
    else:
        torch.save(state, where)
    if where.parent.name != "folder":
        return where
    config = {  # what timm's push_to_hub writes, with the input size a non-square model needs
        "architecture": name,
        "num_classes": 10,
        "global_pool": "token",
        "pretrained_cfg": {"input_size": [3, *size], "crop_pct": 1.0, "crop_mode": "squash"},
    }
    if where.suffix == ".bin":  # the other place timm records it: the model's own arguments
        config["model_args"] = {"img_size": list(size)}
    (where.parent / "config.json").write_text(json.dumps(config))
    return where.parent


@pytest.mark.parametrize("case", CASES)
def test_hybrid_checkpoint_matches_timm(case: str, tmp_path: Path, randomise: Randomise) -> None:
    name, (h, w), depth, saved = CASES[case]
    timm = import_timm()
    reference = timm.create_model(
        name, pretrained=False, img_size=(h, w), num_classes=10, depth=depth
    )
    randomise(reference)
    loaded = load_checkpoint(save_timm(reference, name, (h, w), tmp_path / saved))
    model = loaded.model
    assert loaded.format == "timm-hybrid"
    assert model.config.image_hw == (h, w) and model.config.backbone_std == "timm"
    pixels = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))

    logits, embedding, attentions = timm_outputs(reference, pixels)
    with torch.no_grad():
        fast = model(pixels)
        explained = model(pixels, attention=True)
    assert explained.attentions is not None
    assert explained.attentions.shape == attentions.shape  # (B, L, H, N+1, N+1)
    assert attentions.shape[-1] == 1 + model.config.num_patches
    assert rel_error(fast.logits, logits) <= TOLERANCE
    assert rel_error(fast.embedding, embedding) <= TOLERANCE
    assert rel_error(explained.logits, logits) <= TOLERANCE
    for layer in range(attentions.shape[1]):
        assert rel_error(explained.attentions[:, layer], attentions[:, layer]) <= TOLERANCE, layer


def test_a_resnet_d_hybrid_is_refused_by_name(tmp_path: Path) -> None:
    # timm's vit_*_resnet26d hybrids put a BatchNorm ResNet-D under patch_embed.backbone: another
    # network, which must be named, not half-loaded.
    timm = import_timm()
    model = timm.create_model("vit_small_resnet26d_224", pretrained=False, depth=1)
    path = save_timm(model, "vit_small_resnet26d_224", (224, 224), tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match=r"d.safetensors: unsupported timm hybrid backbone"):
        load_checkpoint(path)


def test_timm_numerics_are_timms_where_each_choice_shows(
    tmp_path: Path, randomise: Randomise
) -> None:
    # A faint image, a stem kernel with σ ≈ 1e-4 and wide MLP inputs: here the kernel
    # standardisation, the GroupNorm eps and the GELU each change the answer (test_npz_hybrid.py
    # holds the same check for Flax's choices).
    name, size = "vit_tiny_r_s16_p8_224", (64, 96)
    timm = import_timm()
    reference = timm.create_model(name, pretrained=False, img_size=size, num_classes=10, depth=2)
    randomise(reference)
    with torch.no_grad():
        reference.patch_embed.backbone.conv.weight.mul_(5e-4)
        for block in reference.blocks:
            block.mlp.fc1.weight.mul_(5.0)
    model = load_checkpoint(
        save_timm(reference, name, size, tmp_path / "folder/model.safetensors")
    ).model
    pixels = 1e-3 * torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    want = timm_outputs(reference, pixels)[0]

    def error(config: ViTConfig) -> float:
        with torch.no_grad():
            return rel_error(build_model(config, model.state_dict())(pixels).logits, want)

    assert error(model.config) <= TOLERANCE
    for flax_choice in ({"backbone_std": "flax"}, {"backbone_gn_eps": 1e-6}, {"gelu": "tanh"}):
        assert error(replace(model.config, **flax_choice)) > 3 * TOLERANCE, flax_choice
