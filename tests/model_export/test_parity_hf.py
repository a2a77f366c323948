"""HuggingFace ViT folders, written by transformers itself, load to the same function.

Two configurations that differ in image size, patch size, depth, heads, GELU and epsilon, both
key layouts (transformers 4.x names, as every checkpoint saved before 5.0 has them, and the 5.x
names), ViTForImageClassification and ViTModel. Random weights, no network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ViTConfig as HFConfig
from transformers import ViTForImageClassification, ViTImageProcessorPil, ViTModel

from model_export.formats.checkpoints import CheckpointError, load_checkpoint

Randomise = Callable[[nn.Module], nn.Module]

CONFIGS: dict[str, dict[str, Any]] = {
    "32px-p8-d2-h4-erf": dict(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", layer_norm_eps=1e-12,
        id2label={i: name for i, name in enumerate(["ant", "bee", "cat", "dog", "eel"])},
    ),
    "48px-p16-d3-h6-tanh-nobias": dict(
        image_size=48, patch_size=16, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
        intermediate_size=96, hidden_act="gelu_new", layer_norm_eps=1e-6, qkv_bias=False,
        id2label={0: "no", 1: "yes", 2: "maybe"},
    ),
}  # fmt: skip
LAYOUTS = {"4.x": "encoder.layer.0.attention.attention.query", "5.x": "layers.0.attention.q_proj"}
MODELS = {"classifier": ViTForImageClassification, "backbone": ViTModel}


def save_hf(
    folder: Path, config: dict[str, Any], layout: str, model_cls: type, randomise: Randomise
) -> nn.Module:
    """A random HF ViT saved by transformers in the given key layout; returns the HF model."""
    hf = model_cls(HFConfig(**config, attn_implementation="eager"))
    randomise(hf)
    # transformers 5 writes the legacy (4.x) names unless asked for its own.
    hf.save_pretrained(folder, save_original_format=layout == "4.x")
    keys = load_file(folder / "model.safetensors")
    assert any(LAYOUTS[layout] in k for k in keys), "transformers wrote another layout"
    return hf


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config_name", CONFIGS)
def test_parity_with_transformers(
    tmp_path: Path, randomise: Randomise, config_name: str, layout: str, model_name: str
) -> None:
    config = CONFIGS[config_name]
    hf = save_hf(tmp_path, config, layout, MODELS[model_name], randomise)
    loaded = load_checkpoint(tmp_path)
    assert loaded.format == "hf"
    ours = loaded.model
    size = config["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = hf(pixels, output_attentions=True)
        got = ours(pixels, attention=True)
        backbone = hf if model_name == "backbone" else hf.vit
        hidden = backbone(pixels).last_hidden_state  # (B, N+1, D), after HF's final LayerNorm
    assert (ours.config.eps, ours.config.heads) == (
        config["layer_norm_eps"],
        config["num_attention_heads"],
    )
    if model_name == "classifier":
        assert rel_error(got.logits, want.logits) <= 1e-5
        assert ours.config.labels == tuple(config["id2label"].values())
    else:
        assert ours.config.num_classes == 0 and ours.config.labels == ()
    assert rel_error(got.embedding, hidden[:, 0]) <= 1e-5
    assert got.attentions is not None and len(want.attentions) == config["num_hidden_layers"]
    for layer, weights in enumerate(want.attentions):  # (B, H, N+1, N+1) per layer
        assert rel_error(got.attentions[:, layer], weights) <= 1e-5


def test_config_and_preprocessing_come_from_the_folder(
    tmp_path: Path, randomise: Randomise
) -> None:
    config = CONFIGS["48px-p16-d3-h6-tanh-nobias"]
    save_hf(tmp_path, config, "5.x", ViTForImageClassification, randomise)
    c = load_checkpoint(tmp_path).model.config
    assert (c.image_size, c.patch_size, c.dim, c.depth, c.heads, c.mlp_dim) == (
        48,
        16,
        48,
        3,
        6,
        96,
    )
    assert (c.gelu, c.eps, c.qkv_bias, c.num_classes) == ("tanh", 1e-6, False, 3)
    # No preprocessor_config.json: ViTImageProcessor's defaults.
    assert (c.mean, c.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert (c.interpolation, c.resize_mode) == ("bilinear", "squash")
    processor = ViTImageProcessorPil(
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], resample=3
    )
    processor.save_pretrained(tmp_path)
    c = load_checkpoint(tmp_path).model.config
    assert (c.mean, c.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert c.interpolation == "bicubic"


def test_backbone_pooler_is_ignored(tmp_path: Path, randomise: Randomise) -> None:
    save_hf(tmp_path, CONFIGS["32px-p8-d2-h4-erf"], "4.x", ViTModel, randomise)
    assert any(k.startswith("pooler.") for k in load_file(tmp_path / "model.safetensors"))
    assert load_checkpoint(tmp_path, format="hf").model.head.__class__ is nn.Identity


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "sharded", "bare-file"])
def test_other_weight_files(tmp_path: Path, randomise: Randomise, weights: str) -> None:
    config = CONFIGS["32px-p8-d2-h4-erf"]
    hf = save_hf(tmp_path / "hf", config, "4.x", ViTForImageClassification, randomise)
    state = load_file(tmp_path / "hf" / "model.safetensors")
    if weights == "pytorch_model.bin":
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
        path = tmp_path / "hf"
    elif weights == "sharded":
        hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
        assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
        path = tmp_path / "sharded"
    else:  # HF keys with no config.json beside them: shapes say all but heads
        (tmp_path / "bare").mkdir()
        path = tmp_path / "bare" / "vit.pth"
        torch.save(state, path)
    loaded = load_checkpoint(path, heads=4)
    assert loaded.format == "hf"
    ours = loaded.model
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert rel_error(ours(pixels).logits, hf(pixels).logits) <= 1e-5


def test_config_that_contradicts_the_weights(tmp_path: Path, randomise: Randomise) -> None:
    save_hf(tmp_path, CONFIGS["32px-p8-d2-h4-erf"], "5.x", ViTModel, randomise)
    original = json.loads((tmp_path / "config.json").read_text())

    def load_with(**changes: Any) -> None:
        (tmp_path / "config.json").write_text(json.dumps({**original, **changes}))
        load_checkpoint(tmp_path)

    with pytest.raises(CheckpointError, match=r"mis-shaped keys: blocks\.0\.mlp\.fc1\.weight"):
        load_with(intermediate_size=128)
    with pytest.raises(CheckpointError, match="missing keys: blocks.2.attn.proj.bias"):
        load_with(num_hidden_layers=3)
    with pytest.raises(CheckpointError, match="dim 32 is not divisible by heads 5"):
        load_with(num_attention_heads=5)
    with pytest.raises(CheckpointError, match="hidden_act 'relu' is unsupported"):
        load_with(hidden_act="relu")
    load_with()  # the folder as saved loads, but not under another head count
    with pytest.raises(CheckpointError, match="heads=8 was given but .* has 4 heads"):
        load_checkpoint(tmp_path, heads=8)


def test_unknown_hf_keys_are_named(tmp_path: Path, randomise: Randomise) -> None:
    save_hf(tmp_path, CONFIGS["32px-p8-d2-h4-erf"], "5.x", ViTModel, randomise)
    state = load_file(tmp_path / "model.safetensors")
    del state["layers.1.attention.k_proj.weight"]
    state["decoder.0.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected keys: decoder.0.weight"):
        load_checkpoint(tmp_path)
    del state["decoder.0.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.weight: .* lacks the k proj"):
        load_checkpoint(tmp_path)
