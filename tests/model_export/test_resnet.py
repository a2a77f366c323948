"""The hybrid's ResNet: each source's kernel standardisation, TF SAME padding, strides, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_export.model.presets import preset
from model_export.model.resnet import StdConv2d, same_padding
from model_export.model.vit import ViT, ViTConfig
from tests.model_export.timm_reference import import_timm, rel_error


def small_kernel(c_out: int = 8, c_in: int = 4, k: int = 3) -> torch.Tensor:
    # σ ≈ 3e-3: small enough that where each source puts its epsilon changes the result.
    return torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(0)) * 3e-3


def test_timm_standardisation_and_padding_match_timms_own_conv() -> None:
    timm = import_timm()
    theirs = timm.layers.StdConv2dSame(4, 8, 3, stride=2, eps=1e-8)  # what timm's hybrids use
    ours = StdConv2d(4, 8, 3, 2, "timm")
    with torch.no_grad():
        theirs.weight.copy_(small_kernel())
        ours.weight.copy_(small_kernel())
        x = torch.randn(2, 4, 13, 10)  # odd and even sides: SAME pads one side more
        assert ours(x).shape == (2, 8, 7, 5)  # ceil(13/2), ceil(10/2)
        assert rel_error(ours(x), theirs(x)) <= 1e-6


def test_flax_standardisation_is_vit_jax_formula_and_differs_from_timms() -> None:
    w = small_kernel().numpy().transpose(2, 3, 1, 0)  # HWIO, as Flax holds it
    # vit_jax models_resnet.weight_standardize(w, axis=[0, 1, 2], eps=1e-5)
    want = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
    flax, timm = StdConv2d(4, 8, 3, 1, "flax"), StdConv2d(4, 8, 3, 1, "timm")
    with torch.no_grad():
        flax.weight.copy_(small_kernel())
        timm.weight.copy_(small_kernel())
        got = flax.standardised_weight().numpy().transpose(2, 3, 1, 0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert rel_error(timm.standardised_weight(), flax.standardised_weight()) > 1e-3


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (13, 3, 2, (1, 1)), (14, 1, 1, (0, 0))],
)
def test_same_padding_puts_the_extra_pixel_after(size, kernel, stride, pads) -> None:
    assert same_padding(size, kernel, stride) == pads


@pytest.mark.parametrize(
    ("stages", "stride", "channels"),
    [((), 4, 64), ((3,), 4, 256), ((3, 4), 8, 512), ((3, 4, 9), 16, 1024)],
)
def test_backbone_stride_and_feature_map(stages, stride, channels) -> None:
    cfg = ViTConfig(
        image_size=(32, 64), patch_size=1 if stages else 2, dim=32, depth=1, heads=2,
        mlp_dim=32, num_classes=3, backbone=stages,
    )  # fmt: skip
    model = ViT(cfg).eval()
    assert cfg.stride == stride * cfg.patch_size and cfg.embed_channels == channels
    with torch.no_grad():
        fmap = model.patch_embed.backbone(torch.randn(1, 3, 32, 64))
        out = model(torch.randn(1, 3, 32, 64), attention=True)
    assert fmap.shape == (1, channels, 32 // stride, 64 // stride)  # (B, C', H/s, W/s)
    assert cfg.grid == (32 // cfg.stride, 64 // cfg.stride)
    assert out.attentions is not None and out.attentions.shape[-1] == 1 + cfg.num_patches


def test_hybrid_config_rejects_sizes_off_the_token_stride() -> None:
    with pytest.raises(ValueError, match=r"\(224, 200\) is not a multiple of 16 \(backbone stride"):
        preset("r50-vit-b16", image_size=(224, 200))


def test_hybrid_config_round_trips_through_json() -> None:
    cfg = preset("r50-vit-b16", image_size=(192, 256), backbone_gn_eps=1e-6, backbone_std="flax")
    again = ViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.backbone == (3, 4, 9) and again.image_hw == (192, 256)
    assert preset("vit-b16", image_size=(224, 224)).image_size == 224  # square stays an int


def test_resize_grid_goes_non_square_for_a_hybrid() -> None:
    model = ViT(preset("r-vit-ti32", depth=1, num_classes=2)).eval()
    before = model.pos_embed.detach().clone()  # (1, 1 + 7·7, D)
    model.resize_grid((96, 160))
    assert model.config.grid == (3, 5) and model.pos_embed.shape == (1, 16, 192)
    torch.testing.assert_close(model.pos_embed[:, :1], before[:, :1])
    assert model(torch.randn(1, 3, 96, 160)).logits.shape == (1, 2)
