"""--grid: the token grid of a non-square model whose file does not record its input size.

A Google .npz holds its position embeddings as (1, 1 + N, D) and nothing else of the geometry, so
35 tokens of a hybrid at 40×56 px (stride 8: 5 × 7) cannot be told from any other 35. The loader
says so and names --grid; given it, the model loads to the same function, in load_checkpoint and
in each command that takes a checkpoint (vit-export, vit-train, vit-inspect).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model_export.demo.shapes import generate
from model_export.export.exporter import main as export_main
from model_export.formats.checkpoints import CheckpointError, load_checkpoint, load_native
from model_export.inspection.inspector import main as inspect_main
from model_export.model.vit import ViT, ViTConfig
from model_export.training.cli import main as train_main
from tests.model_export.flax_layouts import hybrid_npz

ToNpz = Callable[[ViT], dict[str, np.ndarray]]
Randomise = Callable[..., ViT]
HYBRID = ViTConfig(  # stem + one stage, stride 8, 1 × 1 patches: 5 × 7 tokens at 40 × 56 px
    image_size=(40, 56), patch_size=1, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=3,
    backbone=(1, 1), gelu="tanh", backbone_std="flax", backbone_gn_eps=1e-6,
    interpolation="bilinear",
)  # fmt: skip


@pytest.fixture
def hybrid(tmp_path: Path, randomise: Randomise) -> tuple[ViT, Path]:
    model = randomise(ViT(HYBRID))
    path = tmp_path / "R26_hybrid_160x224.npz"
    np.savez(path, **hybrid_npz(model))
    return model, path


def test_a_non_square_hybrid_npz_says_to_pass_the_grid_then_loads(
    hybrid: tuple[ViT, Path],
) -> None:
    model, path = hybrid
    with pytest.raises(CheckpointError, match=r"pos_embedding \(1, 36, 32\) .* --grid RxC"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, grid=(5, 7)).model
    assert loaded.config.image_hw == (40, 56) and loaded.config.grid == (5, 7)
    pixels = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)
    with pytest.raises(CheckpointError, match="grid 6x6 was given, but pos_embedding .* 35"):
        load_checkpoint(path, grid=(6, 6))


def test_a_non_square_plain_npz(
    tmp_path: Path, randomise: Randomise, to_npz: ToNpz, tiny_config: ViTConfig
) -> None:
    config = ViTConfig.from_dict({**tiny_config.to_dict(), "image_size": (32, 48), "gelu": "tanh",
                                  "interpolation": "bilinear", "labels": []})  # fmt: skip
    model = randomise(ViT(config))
    np.savez(tmp_path / "vit.npz", **to_npz(model))
    with pytest.raises(CheckpointError, match="24 patch positions are no square grid"):
        load_checkpoint(tmp_path / "vit.npz")
    loaded = load_checkpoint(tmp_path / "vit.npz", grid=(4, 6)).model
    assert loaded.config.image_hw == (32, 48)


def test_a_grid_that_contradicts_a_recorded_size_is_an_error(
    tmp_path: Path, random_vit: ViT, to_timm: Callable[[ViT], dict[str, torch.Tensor]]
) -> None:
    save_file(to_timm(random_vit), str(tmp_path / "model.safetensors"))
    sidecar = {"architecture": "vit_tiny", "model_args": {"num_heads": 4},
               "pretrained_cfg": {"input_size": [3, 32, 32]}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(sidecar))  # a timm hub folder: 4 × 4
    with pytest.raises(CheckpointError, match="grid 2x8 was given but .* has a 4x4 token grid"):
        load_checkpoint(tmp_path, grid=(2, 8))


def test_each_command_takes_the_grid(
    hybrid: tuple[ViT, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = hybrid
    assert export_main([str(path), "--out", str(tmp_path / "b")]) == 2
    assert "--grid RxC" in capsys.readouterr().err
    assert export_main([str(path), "--out", str(tmp_path / "b"), "--grid", "5x7"]) == 0
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    assert manifest["image_size"] == [40, 56] and manifest["source"]["format"] == "npz-hybrid"

    images = tmp_path / "shapes"
    generate(images, n_per_class=2, seed=0, size=48, fmt="png")
    report = tmp_path / "inspect"
    assert (
        inspect_main([str(path), "--images", str(images), "--out", str(report), "--grid", "5x7"])
        == 0
    )
    inspected = json.loads((report / "inspect.json").read_text())
    assert inspected["grid"] == [5, 7] and inspected["image_size"] == [40, 56]

    fast = ["--steps", "1", "--batch-size", "4", "--micro-batch", "4", "--warmup-steps", "1"]
    out = tmp_path / "ft"
    train_main([str(images), "--checkpoint", str(path), "--grid", "5x7", "--out", str(out),
                "--quiet", "--threads", "1", *fast])  # fmt: skip
    assert load_native(out).config.image_hw == (40, 56)
    with pytest.raises(SystemExit):
        train_main([str(images), "--checkpoint", str(path), "--grid", "5by7", "--out", str(out)])
    assert "is not RxC" in capsys.readouterr().err
