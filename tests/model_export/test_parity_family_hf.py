"""DeiT, DINOv2, CLIP and SigLIP folders written by transformers itself load to the same function.

Each family member as transformers defines it (random weights in every tensor, LayerScale gammas
included, no network), saved in both key layouts (the 4.x names transformers 5 still writes by
default, and its own 5.x names), loaded by format detection alone. In float32, our model and
transformers' agree to 1e-5 relative error, max |ours - theirs| / max |theirs|, on what each
publishes: the logits where there is a head, the embedding /embed returns (DeiT's mean of its two
tokens, DINOv2's class token or its classifier's [class token; patch mean], CLIP's normalised
projection, SigLIP's pooled output), every layer's attention map, and SigLIP's pooling attention.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPConfig as CLIPPairConfig
from transformers import (
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers import SiglipConfig as SiglipPairConfig

from model_export.formats.checkpoints import load_checkpoint
from model_export.model.vit import ViTOutput
from tests.model_export.timm_reference import FAMILY_TOLERANCE, rel_error

Randomise = Callable[[nn.Module], nn.Module]
SMALL: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    image_size=32, patch_size=8, attn_implementation="eager",
)  # fmt: skip
LABELS = {0: "ant", 1: "bee", 2: "cat"}
TEXT = dict(  # the smallest text tower a two-tower model accepts; its weights are dropped
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
)


def _deit_embedding(hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = hf.deit(x).last_hidden_state  # (B, 2 + N, D), after the final LayerNorm
    return (tokens[:, 0] + tokens[:, 1]) / 2  # timm's pre-logits: what the two heads read


def _dinov2_classifier_input(hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = hf.dinov2(x).last_hidden_state
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)


CASES: dict[str, tuple[type, Any, str, Callable[[nn.Module, torch.Tensor], torch.Tensor]]] = {
    # id: (class, config, what we publish, the same in transformers' outputs)
    "deit-with-teacher": (
        DeiTForImageClassificationWithTeacher, DeiTConfig(**SMALL, id2label=LABELS),
        "cls_dist_mean", _deit_embedding,
    ),
    "deit-classifier": (
        DeiTForImageClassification, DeiTConfig(**SMALL, id2label=LABELS),
        "cls", lambda hf, x: hf.deit(x).last_hidden_state[:, 0],
    ),
    "dinov2": (
        Dinov2Model, Dinov2Config(**SMALL), "cls", lambda hf, x: hf(x).pooler_output,
    ),
    "dinov2-swiglu": (
        Dinov2Model, Dinov2Config(**SMALL, use_swiglu_ffn=True),
        "cls", lambda hf, x: hf(x).pooler_output,
    ),
    "dinov2-registers": (
        Dinov2WithRegistersModel, Dinov2WithRegistersConfig(**SMALL, num_register_tokens=4),
        "cls", lambda hf, x: hf(x).pooler_output,
    ),
    "dinov2-classifier": (
        Dinov2ForImageClassification, Dinov2Config(**SMALL, id2label=LABELS),
        "cls_patch_mean", _dinov2_classifier_input,
    ),
    "clip": (
        CLIPVisionModelWithProjection, CLIPVisionConfig(**SMALL, projection_dim=16),
        "cls_projection", lambda hf, x: F.normalize(hf(x).image_embeds, dim=-1),
    ),
    "clip-no-projection": (
        CLIPVisionModel, CLIPVisionConfig(**SMALL), "cls", lambda hf, x: hf(x).pooler_output,
    ),
    "siglip": (
        SiglipVisionModel, SiglipVisionConfig(**SMALL), "map", lambda hf, x: hf(x).pooler_output,
    ),
}  # fmt: skip
LAYOUTS = {"4.x": True, "5.x": False}  # save_original_format


def save_transformers(
    folder: Path, model_cls: type, config: Any, layout: str, randomise: Randomise
) -> nn.Module:
    hf = randomise(model_cls(config))
    hf.save_pretrained(folder, save_original_format=LAYOUTS[layout])
    return hf


def pooling_attention(hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SigLIP's head: its probe's attention over the patches, (B, H, N), per head."""
    tower = getattr(hf, "vision_model", hf)
    tokens = tower(x).last_hidden_state  # after post_layernorm: what the head reads
    head = tower.head
    probe = head.probe.expand(len(x), -1, -1)
    _, weights = head.attention(
        probe, tokens, tokens, need_weights=True, average_attn_weights=False
    )  # (B, H, 1, N)
    return weights[:, :, 0]


def compare(
    ours: ViTOutput, fast: ViTOutput, hf: nn.Module, x: torch.Tensor, published: Callable
) -> dict:
    """{what: max relative error} for logits and embedding (both of our paths: the explicit
    attention that returns its weights, and the fused one that serves), every attention map."""
    with torch.no_grad():
        want = hf(x, output_attentions=True)
        embedding = published(hf, x)
        errors = {"embedding": rel_error(ours.embedding, embedding)}
        errors["embedding, fused path"] = rel_error(fast.embedding, embedding)
        if getattr(want, "logits", None) is not None:
            errors["logits"] = rel_error(ours.logits, want.logits)
            errors["logits, fused path"] = rel_error(fast.logits, want.logits)
        assert ours.attentions is not None and len(want.attentions) == ours.attentions.shape[1]
        for layer, weights in enumerate(want.attentions):  # (B, H, T, T) per layer
            errors[f"attention {layer}"] = rel_error(ours.attentions[:, layer], weights)
        if ours.pool_attention is not None:
            errors["pooling attention"] = rel_error(ours.pool_attention, pooling_attention(hf, x))
    return errors


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_family_member_matches_transformers(
    tmp_path: Path, randomise: Randomise, case: str, layout: str
) -> None:
    model_cls, config, name, published = CASES[case]
    hf = save_transformers(tmp_path, model_cls, config, layout, randomise)
    loaded = load_checkpoint(tmp_path)
    assert loaded.format == f"hf-{case.split('-')[0]}"
    model = loaded.model
    assert model.config.embedding_name == name
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, fast = model(x, attention=True), model(x)
    errors = compare(ours, fast, hf, x, published)
    assert max(errors.values()) <= FAMILY_TOLERANCE, errors
    if "logits" in errors:
        assert model.config.labels == tuple(LABELS.values())


def test_the_layerscale_gammas_count(tmp_path: Path, randomise: Randomise) -> None:
    # Random gammas (not transformers' 1.0, nor timm's 1e-5) make the test above see LayerScale;
    # here, loading without them must change the answer.
    hf = save_transformers(tmp_path, Dinov2Model, Dinov2Config(**SMALL), "4.x", randomise)
    model = load_checkpoint(tmp_path).model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = hf(x).pooler_output
        for block in model.blocks:
            block.ls1.gamma.fill_(1.0)
        assert rel_error(model(x).embedding, want) > 100 * FAMILY_TOLERANCE


def test_two_tower_models_load_their_image_tower(tmp_path: Path, randomise: Randomise) -> None:
    vision = dict(SMALL, attn_implementation=None)
    del vision["attn_implementation"]
    towers = dict(text_config=TEXT, vision_config=vision)
    pairs = {
        "clip": (CLIPModel, CLIPPairConfig(**towers, projection_dim=16)),
        "siglip": (SiglipModel, SiglipPairConfig(**towers)),
    }
    x = torch.randn(2, 3, 32, 32)
    for family, (model_cls, config) in pairs.items():
        hf = randomise(model_cls(config))
        hf.save_pretrained(tmp_path / family)
        loaded = load_checkpoint(tmp_path / family)
        assert loaded.format == f"hf-{family}"
        with torch.no_grad():
            want = hf.get_image_features(pixel_values=x)
            want = getattr(want, "pooler_output", want)
            got = loaded.model(x).embedding
        if family == "clip":
            want = F.normalize(want, dim=-1)  # what CLIP users compare with text embeddings
        assert rel_error(got, want) <= FAMILY_TOLERANCE, family


@pytest.mark.parametrize(
    ("model_cls", "config", "mode"),
    [
        (Dinov2Model, Dinov2Config, "bicubic"),
        (Dinov2WithRegistersModel, Dinov2WithRegistersConfig, "bicubic-antialias"),
    ],
    ids=["dinov2", "dinov2-registers"],
)
@pytest.mark.parametrize("size", [32, 80], ids=["fewer-positions", "more-positions"])
def test_dinov2_serves_at_its_processors_size_as_transformers_interpolates(
    tmp_path: Path, randomise: Randomise, model_cls: type, config: type, mode: str, size: int
) -> None:
    # Positions for 48 px (6 × 6 at patch 8); the processor feeds `size` px, which transformers
    # reaches by interpolating the positions on every call, each class its own way.
    hf = randomise(model_cls(config(**{**SMALL, "image_size": 48})))
    hf.save_pretrained(tmp_path)
    processor = {"crop_size": {"height": size, "width": size}, "do_center_crop": True,
                 "size": {"shortest_edge": size}, "resample": 3}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    model = load_checkpoint(tmp_path).model
    assert model.config.image_size == size and model.config.pos_embed_resize == mode
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf(x, output_attentions=True)
        got = model(x, attention=True)
    assert rel_error(got.embedding, want.pooler_output) <= FAMILY_TOLERANCE
    assert got.attentions is not None
    assert rel_error(got.attentions[:, -1], want.attentions[-1]) <= FAMILY_TOLERANCE
    (tmp_path / "preprocessor_config.json").unlink()  # at the positions' own 48 px, then moved
    other = load_checkpoint(tmp_path).model
    other.resize_grid(size, "bicubic" if mode != "bicubic" else "bicubic-antialias")
    with torch.no_grad():  # the other class's interpolation is another function
        assert rel_error(other(x).embedding, want.pooler_output) > 10 * FAMILY_TOLERANCE


def test_processor_settings_come_from_the_folder(tmp_path: Path, randomise: Randomise) -> None:
    save_transformers(tmp_path, CLIPVisionModelWithProjection,
                      CLIPVisionConfig(**SMALL, projection_dim=16), "5.x", randomise)  # fmt: skip
    c = load_checkpoint(tmp_path).model.config  # no preprocessor_config.json: CLIP's defaults
    assert c.mean == (0.48145466, 0.4578275, 0.40821073)
    assert (c.interpolation, c.resize_mode, c.gelu, c.eps) == (
        "bicubic",
        "crop",
        "quick_gelu",
        1e-5,
    )
    assert (c.pre_norm, c.patch_bias, c.normalize, c.projection_dim) == (True, False, True, 16)
    processor = {"size": {"shortest_edge": 40}, "crop_size": 32, "do_center_crop": True,
                 "image_mean": 0.5, "image_std": [0.2, 0.3, 0.4], "resample": 2}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    c = load_checkpoint(tmp_path).model.config
    assert (c.image_size, c.resize_mode, c.crop_pct) == (32, "crop", 0.8)
    assert c.interpolation == "bilinear"
    assert (c.mean, c.std) == ((0.5, 0.5, 0.5), (0.2, 0.3, 0.4))


def test_saved_keys_are_the_layouts_the_tests_claim(tmp_path: Path, randomise: Randomise) -> None:
    # transformers 5 writes DINOv2 and DeiT in 4.x names unless asked, SigLIP without a prefix.
    written = {}
    for name in ("dinov2", "deit-with-teacher", "siglip"):
        model_cls, config, _, _ = CASES[name]
        for layout in LAYOUTS:
            save_transformers(tmp_path / name / layout, model_cls, config, layout, randomise)
            written[name, layout] = set(load_file(tmp_path / name / layout / "model.safetensors"))
    assert "encoder.layer.0.attention.attention.query.weight" in written["dinov2", "4.x"]
    assert "encoder.layer.0.attention.q_proj.weight" in written["dinov2", "5.x"]
    assert "deit.encoder.layer.0.intermediate.dense.weight" in written["deit-with-teacher", "4.x"]
    assert "deit.layers.0.mlp.fc1.weight" in written["deit-with-teacher", "5.x"]
    assert "head.probe" in written["siglip", "5.x"]
