"""DeiT, DINOv2, CLIP and SigLIP files written from timm's own models load to the same function,
and so do the files of DINOv2's own code and of open_clip (OpenAI CLIP's names).

timm's registered architectures at small sizes, random weights in every tensor (LayerScale gammas
included, so LayerScale shows), saved as timm checkpoints travel (a hub folder with config.json,
or a bare .safetensors). In float32, ours and timm's agree to 1e-5 relative error, max
|ours - theirs| / max |theirs|, on the logits where there is a head, the embedding /embed
publishes (timm's pre-logits; CLIP: its projection, L2-normalised), every layer's attention map,
and SigLIP's attention-pooling weights. DINOv2's and open_clip's files are written from timm's
models by the inverse of timm's own converters (_convert_dinov2, _convert_openai_clip), and from
open_clip itself where it is installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from model_export.formats.checkpoints import load_checkpoint
from model_export.model.pos_embed import resize_pos_embed
from tests.model_export.timm_reference import (
    FAMILY_TOLERANCE,
    attention_weights,
    import_open_clip,
    import_timm,
    rel_error,
)

Randomise = Callable[[nn.Module], nn.Module]
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
CASES: dict[str, tuple[str, dict[str, Any]]] = {  # id: (timm architecture, overrides)
    "deit-distilled": ("deit_tiny_distilled_patch16_224", dict(num_classes=3)),
    "deit3": ("deit3_small_patch16_224", dict(num_classes=3)),  # no class position
    "dinov2": ("vit_small_patch14_dinov2", dict(num_classes=0)),
    "dinov2-head": ("vit_small_patch14_dinov2", dict(num_classes=3)),
    "dinov2-registers": ("vit_small_patch14_reg4_dinov2", dict(num_classes=0)),
    "dinov2-giant-swiglu": ("vit_giant_patch14_dinov2", dict(num_classes=0, mlp_ratio=2.66667 * 2)),
    "clip": ("vit_base_patch16_clip_224", dict(num_classes=16)),
    "clip-quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(num_classes=16)),
    "clip-classifier": ("vit_base_patch16_clip_224", dict(num_classes=3)),
    "siglip": ("vit_base_patch16_siglip_224", dict(num_classes=0)),
    "siglip-head": ("vit_base_patch16_siglip_224", dict(num_classes=3)),
    "map-registers": ("vit_so150m_patch16_reg4_map_256", dict(num_classes=0, mlp_ratio=2.5)),
}


def timm_model(case: str, randomise: Randomise) -> nn.Module:
    name, overrides = CASES[case]
    model = randomise(import_timm().create_model(name, pretrained=False, **SMALL, **overrides))
    if case in ("clip", "clip-quickgelu"):  # the image tower's projection, as timm converts it
        with torch.no_grad():
            model.head.bias.zero_()
    return model


def save_hub_folder(model: nn.Module, case: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
    config = {  # what timm's push_to_hub writes, with the sizes of this small model
        "architecture": CASES[case][0],
        "num_classes": model.num_classes,
        "global_pool": model.global_pool,
        "model_args": {"num_heads": 4},
        "pretrained_cfg": {"input_size": [3, 32, 32], "crop_pct": 1.0, "crop_mode": "squash"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def reference(model: nn.Module, x: torch.Tensor, projection: bool) -> dict[str, torch.Tensor]:
    """timm's outputs in our vocabulary: logits, published embedding, attention (B, L, H, T, T),
    and for an attention-pooled model the pool's weights over the patches (B, H, N)."""
    with attention_weights(model) as weights, torch.no_grad():
        tokens = model.forward_features(x)  # (B, T, D) after the final norm
        pre_logits = model.forward_head(tokens, pre_logits=True)
        out = model.forward_head(tokens)
    want = {"attentions": torch.stack(weights, dim=1)}
    if projection:
        want["embedding"] = F.normalize(out, dim=-1)  # CLIP's image embedding, as users compare it
    else:
        want["embedding"] = pre_logits
        if model.num_classes:
            want["logits"] = out
    if getattr(model, "attn_pool", None) is not None:
        want["pool"] = pool_attention(model.attn_pool, tokens[:, model.num_prefix_tokens :])
    return want


def pool_attention(pool: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """timm's AttentionPoolLatent's softmax weights (its non-fused path, written out)."""
    b, n, _ = tokens.shape
    h, hd = pool.num_heads, pool.head_dim
    with torch.no_grad():
        q = pool.q(pool.latent.expand(b, -1, -1)).reshape(b, 1, h, hd).transpose(1, 2)
        k = pool.kv(tokens).reshape(b, n, 2, h, hd).permute(2, 0, 3, 1, 4)[0]
        return ((q * pool.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]  # (B, H, N)


def assert_same_function(ours: nn.Module, want: dict[str, torch.Tensor], x: torch.Tensor) -> dict:
    with torch.no_grad():
        got, fast = ours(x, attention=True), ours(x)  # both attention paths
    errors = {"embedding": rel_error(got.embedding, want["embedding"])}
    errors["embedding, fused path"] = rel_error(fast.embedding, want["embedding"])
    if "logits" in want:
        errors["logits"] = rel_error(got.logits, want["logits"])
        errors["logits, fused path"] = rel_error(fast.logits, want["logits"])
    for layer in range(want["attentions"].shape[1]):
        errors[f"attention {layer}"] = rel_error(
            got.attentions[:, layer], want["attentions"][:, layer]
        )
    if "pool" in want:
        errors["pooling attention"] = rel_error(got.pool_attention, want["pool"])
    assert max(errors.values()) <= FAMILY_TOLERANCE, errors
    return errors


PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("saved", ["hub-folder", "bare-file"])
@pytest.mark.parametrize("case", CASES)
def test_family_member_matches_timm(
    tmp_path: Path, randomise: Randomise, case: str, saved: str
) -> None:
    model = timm_model(case, randomise)
    grid = None
    if saved == "hub-folder":
        path = save_hub_folder(model, case, tmp_path / "folder")
    else:
        if "quickgelu" in case:
            pytest.skip("only a hub config.json says QuickGELU (the architecture's name)")
        if case == "deit3":  # 16 positions and a class token: 4×4 without a class position, or
            grid = (4, 4)  # 15 with one? The file cannot say; the caller does (--grid 4x4).
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = load_checkpoint(path, heads=4, grid=grid)
    assert loaded.format == "timm"
    projection = case in ("clip", "clip-quickgelu")
    assert_same_function(loaded.model, reference(model, PIXELS, projection), PIXELS)
    c = loaded.model.config
    assert (c.projection_dim is not None, c.normalize) == (projection, projection)
    assert c.gelu == ("quick_gelu" if "quickgelu" in case else "erf")


def test_the_layerscale_gammas_count(randomise: Randomise, tmp_path: Path) -> None:
    model = timm_model("dinov2", randomise)
    ours = load_checkpoint(save_hub_folder(model, "dinov2", tmp_path / "f")).model
    want = reference(model, PIXELS, False)["embedding"]
    with torch.no_grad():
        for block in ours.blocks:
            block.ls2.gamma.fill_(1e-5)  # timm's init, which would hide a LayerScale bug
        assert rel_error(ours(PIXELS).embedding, want) > 100 * FAMILY_TOLERANCE


# --- DINOv2's own checkpoints -------------------------------------------------------------------


def to_dinov2(model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's DINOv2 in facebookresearch/dinov2's names: the inverse of timm's _convert_dinov2
    (a class position of zero; timm folds it into cls_token for the models with registers)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    if "reg_token" in sd:
        sd["register_tokens"] = sd.pop("reg_token")
        pos = sd["pos_embed"]
        sd["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    if type(model.blocks[0].mlp).__name__ == "GluMlp":  # the giant's SwiGLU: w12, w3
        sd = {
            k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v
            for k, v in sd.items()
        }
    return sd


@pytest.mark.parametrize("case", ["dinov2", "dinov2-registers", "dinov2-giant-swiglu"])
def test_dinov2_own_checkpoints(tmp_path: Path, randomise: Randomise, case: str) -> None:
    model = timm_model(case, randomise)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(to_dinov2(model), path)
    loaded = load_checkpoint(path, heads=4)
    assert loaded.format == "dinov2"
    assert_same_function(loaded.model, reference(model, PIXELS, False), PIXELS)
    mode = "bicubic-antialias" if "registers" in case else "bicubic-offset"
    assert loaded.model.config.pos_embed_resize == mode


def dinov2_interpolate(pos_embed: torch.Tensor, h0: int, w0: int, antialias: bool, offset: float):
    """facebookresearch/dinov2's DinoVisionTransformer.interpolate_pos_encoding, as written there
    (dinov2/models/vision_transformer.py): h0, w0 in patches; M from the square table."""
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    n, dim = patch_pos_embed.shape[1], pos_embed.shape[-1]
    m = int(math.sqrt(n))
    kwargs: dict[str, Any] = {}
    if offset:
        kwargs["scale_factor"] = (float(h0 + offset) / m, float(w0 + offset) / m)
    else:
        kwargs["size"] = (h0, w0)
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=antialias,
        **kwargs,
    )
    assert (h0, w0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.mark.parametrize("new", [(16, 16), (6, 9), (40, 40)])
def test_position_interpolation_is_dinov2s_own(new: tuple[int, int]) -> None:
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(6))  # 518 px
    for mode, antialias, offset in (("bicubic-offset", False, 0.1), ("bicubic-antialias", True, 0)):
        want = dinov2_interpolate(pos, *new, antialias=antialias, offset=offset)
        got = resize_pos_embed(pos, new, mode)  # type: ignore[arg-type]
        assert rel_error(got, want) <= 1e-6, mode
    offset_free = resize_pos_embed(pos, new, "bicubic")
    assert rel_error(offset_free, dinov2_interpolate(pos, *new, False, 0.1)) > 1e-4


# --- open_clip and OpenAI CLIP ------------------------------------------------------------------


def to_open_clip(model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's CLIP tower in open_clip's (OpenAI's) names: the inverse of timm's
    _convert_openai_clip, the projection (timm's head, zero bias) back to `visual.proj` (D, E)."""
    swaps = [  # ours/timm's -> theirs, applied in order
        ("patch_embed.proj", "conv1"), ("pos_embed", "positional_embedding"),
        ("blocks.", "transformer.resblocks."), ("norm_pre", "ln_pre"), (".norm1", ".ln_1"),
        (".norm2", ".ln_2"), ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
    ]  # fmt: skip
    out = {}
    for key, value in model.state_dict().items():
        if key == "head.weight":
            out["visual.proj"] = value.T.contiguous()
            continue
        if key == "head.bias":
            continue
        if key in ("norm.weight", "norm.bias"):
            key = key.replace("norm", "ln_post")
        for ours, theirs in swaps:
            key = key.replace(ours, theirs)
        if key == "cls_token":
            key, value = "class_embedding", value.reshape(-1)
        elif key == "positional_embedding":
            value = value[0]
        out[f"visual.{key}"] = value.contiguous()
    out["text_projection"] = torch.zeros(16, 16)  # a text tower's keys are dropped
    out["logit_scale"] = torch.ones(())
    return out


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["openai-quickgelu", "gelu"])
def test_open_clip_names_written_from_timm(
    tmp_path: Path, randomise: Randomise, quick_gelu: bool
) -> None:
    case = "clip-quickgelu" if quick_gelu else "clip"
    model = timm_model(case, randomise)
    folder = tmp_path / "open_clip"
    folder.mkdir()
    save_file(to_open_clip(model), folder / "open_clip_model.safetensors")
    sidecar = {"model_cfg": {"quick_gelu": quick_gelu, "vision_cfg": {"head_width": 8}}}
    (folder / "open_clip_config.json").write_text(json.dumps(sidecar))
    loaded = load_checkpoint(folder)
    assert loaded.format == "open-clip" and loaded.model.config.heads == 4
    assert_same_function(loaded.model, reference(model, PIXELS, True), PIXELS)


@pytest.mark.parametrize("variant", ["openai-quickgelu", "gelu-layerscale"])
def test_open_clip_itself(tmp_path: Path, randomise: Randomise, variant: str) -> None:
    open_clip = import_open_clip()
    if open_clip is None:
        pytest.skip(
            "open_clip is not installed (pip install --no-deps open_clip_torch ftfy wcwidth)"
        )
    quick = variant == "openai-quickgelu"
    vision = dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8)
    if not quick:
        vision["ls_init_value"] = 1e-5  # random below, as everything
    text = dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1)
    clip = randomise(open_clip.model.CLIP(16, vision, text, quick_gelu=quick))
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()},
        folder / "open_clip_model.safetensors",
    )
    config = {"model_cfg": {"embed_dim": 16, "quick_gelu": quick, "vision_cfg": vision},
              "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}  # fmt: skip
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(folder)
    assert loaded.format == "open-clip"
    ours = loaded.model
    with torch.no_grad():
        want = clip.encode_image(PIXELS, normalize=True)
        got = ours(PIXELS, attention=True)
    assert rel_error(got.embedding, want) <= FAMILY_TOLERANCE
    assert rel_error(got.attentions, open_clip_attention(clip.visual, PIXELS)) <= FAMILY_TOLERANCE
    assert (ours.config.mean, ours.config.gelu) == (
        (0.5, 0.5, 0.5),
        "quick_gelu" if quick else "erf",
    )


def open_clip_attention(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip runs nn.MultiheadAttention without its weights: they are recomputed here from
    each block's own input (after ln_1) and in_proj, (B, L, H, T, T)."""
    inputs: list[torch.Tensor] = []
    hooks = [
        b.ln_1.register_forward_hook(lambda m, i, o: inputs.append(o))
        for b in visual.transformer.resblocks
    ]
    try:
        with torch.no_grad():
            visual(x)
    finally:
        for h in hooks:
            h.remove()
    maps = []
    for block, z in zip(visual.transformer.resblocks, inputs, strict=True):
        attn = block.attn
        b, t, d = z.shape
        h = attn.num_heads
        q, k, _ = F.linear(z, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k = (u.reshape(b, t, h, d // h).transpose(1, 2) for u in (q, k))
        maps.append((q @ k.transpose(-2, -1) / math.sqrt(d // h)).softmax(dim=-1))
    return torch.stack(maps, dim=1)
