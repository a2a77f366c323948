"""The ViT family's members, small and random, written as their users have them, and their
bundles: shared by the export tests (test_export_family.py) and the served ones
(tests/e2e/test_e2e_family.py).

Each member is written by its own code in its own format (transformers folders, a timm hub
folder, open_clip's names) with random weights in every tensor, LayerScale gammas included, then
exported by the real vit-export. Exports cost seconds each, so a session exports each member once:
bundle() keeps them under pytest's base temporary folder and reuses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tests.model_export.conftest import _randomise

SIZE, PATCH, DIM = 32, 8, 32  # a 4 × 4 grid
LABELS = {0: "ant", 1: "bee", 2: "cat"}
HF_SMALL = dict(
    hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    image_size=SIZE, patch_size=PATCH,
)  # fmt: skip


@dataclass(frozen=True)
class Member:
    write: Callable[[Path], Path]  # folder -> the checkpoint it wrote there
    format: str  # the adapter that reads it
    embedding: tuple[str, int, bool]  # what /embed publishes: name, width, L2-normalised
    attention: str  # what /attention shows
    labels: tuple[str, ...]  # () without a head
    prefix_tokens: int  # tokens before the patches, never on the attention grid


def _deit(folder: Path) -> Path:
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    model = DeiTForImageClassificationWithTeacher(DeiTConfig(**HF_SMALL, id2label=LABELS))
    _randomise(model).save_pretrained(folder)
    return folder


def _dinov2(folder: Path) -> Path:
    # Registers, LayerScale and the giant's SwiGLU in one small model.
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(**HF_SMALL, num_register_tokens=4, use_swiglu_ffn=True)
    _randomise(Dinov2WithRegistersModel(config)).save_pretrained(folder)
    return folder


def _clip(folder: Path) -> Path:
    # OpenAI CLIP's names, as open_clip's hub folders hold them (QuickGELU, a 16-wide projection).
    from safetensors.torch import save_file

    from tests.model_export.test_parity_family_timm import timm_model, to_open_clip

    folder.mkdir(parents=True)
    save_file(
        to_open_clip(timm_model("clip-quickgelu", _randomise)),
        folder / "open_clip_model.safetensors",
    )
    sidecar = {"model_cfg": {"quick_gelu": True, "vision_cfg": {"head_width": 8}}}
    (folder / "open_clip_config.json").write_text(json.dumps(sidecar))
    return folder


def _siglip(folder: Path) -> Path:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    _randomise(SiglipVisionModel(SiglipVisionConfig(**HF_SMALL))).save_pretrained(folder)
    return folder


MEMBERS = {
    "deit": Member(
        _deit, "hf-deit", ("cls_dist_mean", DIM, False), "rollout", tuple(LABELS.values()), 2
    ),
    "dinov2": Member(_dinov2, "hf-dinov2", ("cls", DIM, False), "rollout", (), 5),
    "clip": Member(_clip, "open-clip", ("cls_projection", 16, True), "rollout", (), 1),
    "siglip": Member(_siglip, "hf-siglip", ("map", DIM, False), "pooling", (), 0),
}


def bundle(name: str, base: Path) -> tuple[Path, Path]:
    """(member's checkpoint, its bundle), written once per session under base."""
    from model_export.export.exporter import main

    root = base / "family" / name
    checkpoint, out = root / "checkpoint", root / "bundle"
    if not (out / "model.json").is_file():
        MEMBERS[name].write(checkpoint)
        assert main([str(checkpoint), "--out", str(out), "--name", name, "--force"]) == 0
    return checkpoint, out


def torch_model(checkpoint: Path) -> nn.Module:
    from model_export.formats.checkpoints import load_checkpoint

    return load_checkpoint(checkpoint).model


def reference(model: nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the bundle must answer, from PyTorch: logits, embedding, the attention map (B, N)."""
    from model_export.export.graphs import ExplainGraph

    with torch.no_grad():
        logits, embedding, attention_map, _ = ExplainGraph(model)(pixels)
    return {"logits": logits, "embedding": embedding, "map": attention_map}
