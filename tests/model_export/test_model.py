"""The ViT itself: paper presets, forward contract, attention path, position-embedding resize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model_export.model.presets import PRESETS, preset
from model_export.model.vit import ViT, ViTConfig, count_parameters, resize_pos_embed

TINY = ViTConfig(image_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5)


@pytest.fixture
def tiny() -> ViT:
    torch.manual_seed(0)
    return ViT(TINY).eval()


@pytest.mark.parametrize(
    ("name", "paper_millions"),
    [("vit-b16", 86), ("vit-l16", 307), ("vit-h14", 632)],  # the paper's Table 1
)
def test_parameter_counts_match_the_paper(name: str, paper_millions: int) -> None:
    with torch.device("meta"):  # shapes only: ViT-H would otherwise allocate 2.5 GB
        model = ViT(preset(name))
    assert count_parameters(model) / 1e6 == pytest.approx(paper_millions, rel=0.01)


def test_presets_cover_every_size_and_patch() -> None:
    assert {n for n in PRESETS} == {
        f"vit-{s}{p}" for s in ("ti", "s", "b", "l", "h") for p in (14, 16, 32)
    }
    cfg = preset("vit-s32", image_size=64, num_classes=3)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.patch_size) == (384, 12, 6, 1536, 32)
    assert cfg.grid == (2, 2)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("vit-x16")


def test_forward_contract(tiny: ViT) -> None:
    out = tiny(torch.randn(3, 3, 32, 32))
    assert out.logits.shape == (3, 5)
    assert out.embedding.shape == (3, 32)
    assert out.attentions is None
    # The embedding is exactly what the head reads.
    torch.testing.assert_close(out.logits, tiny.head(out.embedding))


def test_embedding_is_the_normalised_class_token(tiny: ViT) -> None:
    x = torch.randn(2, 3, 32, 32)
    z = torch.cat([tiny.cls_token.expand(2, -1, -1), tiny.patch_embed(x)], 1) + tiny.pos_embed
    for block in tiny.blocks:
        z, _ = block(z)
    y = F.layer_norm(z[:, 0], (32,), tiny.norm.weight, tiny.norm.bias, eps=TINY.eps)
    torch.testing.assert_close(tiny(x).embedding, y)


def test_attention_path_matches_fast_path_and_returns_softmax_weights(tiny: ViT) -> None:
    x = torch.randn(2, 3, 32, 32)
    fast, slow = tiny(x), tiny(x, attention=True)
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.embedding, slow.embedding, rtol=1e-5, atol=1e-6)
    n = TINY.num_patches + 1
    assert slow.attentions is not None
    assert slow.attentions.shape == (2, TINY.depth, TINY.heads, n, n)
    assert (slow.attentions >= 0).all()
    torch.testing.assert_close(slow.attentions.sum(-1), torch.ones(2, TINY.depth, TINY.heads, n))


def test_pre_logits_layer_feeds_the_head_through_tanh() -> None:
    model = ViT(ViTConfig(**{**TINY.to_dict(), "representation_size": 16})).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert model.pre_logits is not None
    torch.testing.assert_close(out.logits, model.head(torch.tanh(model.pre_logits(out.embedding))))


@pytest.mark.parametrize(("gelu", "approximate"), [("erf", "none"), ("tanh", "tanh")])
def test_gelu_form_is_configurable(gelu: str, approximate: str) -> None:
    model = ViT(ViTConfig(**{**TINY.to_dict(), "gelu": gelu}))
    assert model.blocks[0].mlp.act.approximate == approximate


def test_encoder_weights_are_scaled_by_their_fan_not_a_fixed_std() -> None:
    # At D=64 timm's fixed std 0.02 would be a quarter of 1/√D; the paper's Flax init scales.
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=28, patch_size=4, dim=64, depth=2, heads=4, mlp_dim=256))
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    assert block.attn.proj.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    xavier = (2 / (64 + 256)) ** 0.5
    assert block.mlp.fc2.weight.std().item() == pytest.approx(xavier, rel=0.05)
    patch_fan_in = 3 * 4 * 4
    assert model.patch_embed.proj.weight.std().item() == pytest.approx(patch_fan_in**-0.5, rel=0.1)


def test_reset_head_is_zero_initialised_and_drops_pre_logits() -> None:
    model = ViT(ViTConfig(**{**TINY.to_dict(), "representation_size": 16}))
    model.reset_head(3, labels=("a", "b", "c"))
    assert model.pre_logits is None
    assert model.head.weight.shape == (3, 32)
    assert not model.head.weight.any() and not model.head.bias.any()
    assert model.config.num_classes == 3 and model.config.representation_size is None
    probs = model(torch.randn(1, 3, 32, 32)).logits.softmax(-1)
    torch.testing.assert_close(probs, torch.full((1, 3), 1 / 3))  # uniform until trained


def test_resize_keeps_class_token_and_builds_the_new_grid(tiny: ViT) -> None:
    before = tiny.pos_embed.detach().clone()
    tiny.resize_grid(48)
    assert tiny.config.image_size == 48 and tiny.config.grid == (6, 6)
    assert tiny.pos_embed.shape == (1, 37, 32)
    torch.testing.assert_close(tiny.pos_embed[:, :1], before[:, :1])
    assert tiny(torch.randn(1, 3, 48, 48)).logits.shape == (1, 5)


def test_resize_is_2d_interpolation_of_the_grid() -> None:
    # A ramp along the grid's columns stays a ramp along the columns (not along the flat sequence).
    grid = torch.arange(4.0).repeat(4, 1)  # (4, 4), value = column index
    pos = torch.cat([torch.full((1, 1), -7.0), grid.reshape(-1, 1)]).reshape(1, 17, 1)
    out = resize_pos_embed(pos, 8, "bilinear")[0, 1:, 0].reshape(8, 8)
    assert out[:, 0].eq(out[0, 0]).all()  # every row identical
    assert (out[0, 1:] >= out[0, :-1]).all()  # increasing left to right
    assert resize_pos_embed(pos, 8, "bilinear")[0, 0, 0] == -7.0


def test_resize_modes_differ_when_shrinking() -> None:
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 16 * 16, 8)
    plain = resize_pos_embed(pos, 5, "bicubic")
    smooth = resize_pos_embed(pos, 5, "bicubic-antialias")
    linear = resize_pos_embed(pos, 5, "bilinear")
    assert not torch.allclose(plain, smooth) and not torch.allclose(plain, linear)
    torch.testing.assert_close(resize_pos_embed(pos, 16), pos)  # same grid: unchanged


@pytest.mark.parametrize("mode", ["bicubic", "bicubic-antialias", "bilinear"])
def test_every_mode_keeps_a_constant_grid_constant(mode: str) -> None:
    pos = torch.cat([torch.zeros(1, 1, 3), torch.full((1, 49, 3), 0.25)], dim=1)
    out = resize_pos_embed(pos, 12, mode)  # type: ignore[arg-type]
    assert out.shape == (1, 145, 3)
    torch.testing.assert_close(out[:, 1:], torch.full((1, 144, 3), 0.25))


def test_resize_rejects_a_non_square_grid() -> None:
    with pytest.raises(ValueError, match="square grid"):
        resize_pos_embed(torch.zeros(1, 1 + 12, 4), 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 30}, "not a multiple of patch_size"),
        ({"heads": 5}, "not divisible by heads"),
        ({"labels": ("a", "b")}, "2 labels for 5 classes"),
        ({"crop_pct": 0.0}, "crop_pct"),
    ],
)
def test_invalid_configs_are_rejected_with_the_reason(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**TINY.to_dict(), **change})


def test_config_round_trips_through_a_dict_and_rejects_unknown_fields() -> None:
    cfg = ViTConfig(**{**TINY.to_dict(), "labels": tuple("abcde")})
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ViTConfig fields: colour"):
        ViTConfig.from_dict({**cfg.to_dict(), "colour": "red"})


# --- the family's variants (parity with their own code: test_parity_family_*.py) --------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(class_token=False), "pool 'cls' reads the class token, but there is none"),
        (dict(pool="cls_dist"), "pool 'cls_dist' needs the distillation token"),
        (dict(distill_token=True, distill_head=True), "distill_head needs pool 'cls_dist'"),
        (dict(representation_size=8, projection_dim=8), "representation_size .* pool 'cls'"),
        (dict(register_tokens=-1), "register_tokens -1 is negative"),
    ],
)
def test_family_fields_that_do_not_fit_together(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**TINY.to_dict(), **fields})


def test_a_config_written_before_the_family_fields_reads_as_the_plain_vit() -> None:
    old = {k: v for k, v in TINY.to_dict().items() if k in ("image_size", "dim", "depth", "heads")}
    config = ViTConfig.from_dict(old)
    assert (config.class_token, config.pool, config.prefix_tokens, config.embed_dim) == (
        True, "cls", 1, config.dim
    )  # fmt: skip


def test_registers_sit_after_the_positioned_tokens_without_a_position() -> None:
    config = ViTConfig(**{**TINY.to_dict(), "distill_token": True, "pool": "cls_dist",
                          "register_tokens": 3})  # fmt: skip
    model = ViT(config).eval()
    assert model.pos_embed.shape == (1, 2 + 16, 32) and config.prefix_tokens == 5
    patches = torch.randn(2, 16, 32)
    tokens = model.tokens(patches)  # (B, 2 + 3 + 16, D)
    torch.testing.assert_close(tokens[:, 2:5], model.reg_token.expand(2, -1, -1))
    torch.testing.assert_close(tokens[:, 5:], patches + model.pos_embed[:, 2:])
    out = model(torch.randn(2, 3, 32, 32), attention=True)
    assert out.attentions is not None and out.attentions.shape[-1] == 21


@pytest.mark.parametrize(
    "fields",
    [
        dict(class_token=False, pool="map", gelu="tanh"),
        dict(pre_norm=True, patch_bias=False, gelu="quick_gelu", projection_dim=8, normalize=True),
        dict(layer_scale=0.5, mlp="swiglu", register_tokens=2),
        dict(distill_token=True, distill_head=True, pool="cls_dist"),
    ],
    ids=["siglip", "clip", "dinov2", "deit"],
)
def test_each_variant_answers_alike_on_both_attention_paths(fields: dict) -> None:
    torch.manual_seed(0)
    model = ViT(ViTConfig(**{**TINY.to_dict(), **fields})).eval()
    x = torch.randn(2, 3, 32, 32)
    fast, slow = model(x), model(x, attention=True)
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.embedding, slow.embedding, rtol=1e-5, atol=1e-6)
    assert fast.embedding.shape == (2, model.config.embed_dim)
    assert (slow.pool_attention is not None) == (model.config.pool == "map")
