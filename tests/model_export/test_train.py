"""Image-folder data and the `vit-train` fine-tuning CLI, on tiny shapes and a tiny ViT."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model_export.demo import shapes_train as demo
from model_export.demo.shapes import CLASSES, generate
from model_export.formats.checkpoints import load_native, save_native
from model_export.model.vit import ViT, ViTConfig
from model_export.training.cli import main
from model_export.training.data import (
    DataError,
    ImageDataset,
    augment,
    scan,
    split,
    train_batches,
)
from model_export.training.recipe import (
    TrainConfig,
    TrainError,
    evaluate,
    prepare_for_finetune,
    scratch_model,
    train,
    warmup_cosine,
)

SORTED = tuple(sorted(CLASSES))
TINY = dict(image_size=32, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64)
TINY_ARGS = ["--from-scratch", "--image-size", "32", "--patch-size", "8", "--dim", "32"]
TINY_ARGS += ["--depth", "2", "--heads", "2", "--mlp-dim", "64", "--quiet", "--threads", "1"]
FAST = ["--steps", "3", "--batch-size", "8", "--micro-batch", "4", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, n_per_class=6, seed=0, size=32, fmt="png")
    return root


def _tiny_model(seed: int = 0) -> ViT:
    return prepare_for_finetune(scratch_model("vit-ti16", CLASSES, seed, **TINY), CLASSES)


def _copy_tree(src: Path, dst: Path) -> Path:
    for path in src.glob("*/*"):
        (dst / path.parent.name).mkdir(parents=True, exist_ok=True)
        (dst / path.parent.name / path.name).write_bytes(path.read_bytes())
    return dst


# --- data -----------------------------------------------------------------------------------


def test_scan_sorts_classes_or_keeps_a_given_head_order(shapes_dir: Path) -> None:
    folder = scan(shapes_dir)
    assert folder.classes == SORTED
    assert len(folder.samples) == 36 and folder.skipped == ()
    assert {label for _, label in folder.samples} == set(range(6))
    ordered = scan(shapes_dir, classes=CLASSES)
    assert ordered.classes == CLASSES
    assert all(path.parent.name == CLASSES[label] for path, label in ordered.samples)


def test_unreadable_images_are_skipped_and_counted(shapes_dir: Path, tmp_path: Path) -> None:
    root = _copy_tree(shapes_dir, tmp_path / "data")
    (root / "star" / "garbage.jpg").write_bytes(b"not an image at all")
    good = (root / "star" / "00000.png").read_bytes()
    (root / "star" / "truncated.png").write_bytes(good[: len(good) // 2])
    folder = scan(root)
    assert len(folder.samples) == 36
    assert sorted(p.name for p in folder.skipped) == ["garbage.jpg", "truncated.png"]


def test_empty_or_unreadable_class_is_an_error(shapes_dir: Path, tmp_path: Path) -> None:
    root = _copy_tree(shapes_dir, tmp_path / "data")
    (root / "oval").mkdir()
    with pytest.raises(DataError, match="no readable images in class folder.*oval"):
        scan(root)
    (root / "oval" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataError, match="oval"):
        scan(root)


def test_missing_folder_and_foreign_classes_are_errors(shapes_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes((shapes_dir / "star" / "00000.png").read_bytes())
    with pytest.raises(DataError, match="no class sub-folders"):
        scan(tmp_path / "flat")
    with pytest.raises(DataError, match="differ from the expected classes"):
        scan(shapes_dir, classes=("circle", "square"))


def test_split_is_seeded_per_class_and_disjoint(shapes_dir: Path) -> None:
    samples = scan(shapes_dir).samples
    train_a, val_a = split(samples, 0.34, seed=1)
    train_b, val_b = split(samples, 0.34, seed=1)
    _, val_c = split(samples, 0.34, seed=2)
    assert (train_a, val_a) == (train_b, val_b) and val_a != val_c
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 36
    assert sorted(label for _, label in val_a) == sorted(list(range(6)) * 2)  # 2 of 6 per class
    with pytest.raises(DataError, match="fraction"):
        split(samples, 1.0, seed=0)


def test_dataset_preprocesses_as_the_config_says(tmp_path: Path) -> None:
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 40))  # a blue left eighth
    (tmp_path / "red").mkdir()
    image.save(tmp_path / "red" / "a.png")
    samples = scan(tmp_path).samples

    def pixels(**config: Any) -> np.ndarray:  # (3, S, S)
        return ImageDataset(samples, ViTConfig(image_size=32, patch_size=8, **config))[0][0].numpy()

    squash = pixels()
    assert squash.shape == (3, 32, 32) and squash.dtype == np.float32
    assert squash[0, 16, 31] == pytest.approx(1.0) and squash[1, 16, 31] == pytest.approx(-1.0)
    assert squash[2, 16, 0] == pytest.approx(1.0)  # squash keeps the whole width: blue shows
    assert pixels(resize_mode="crop")[2, 16, 0] == pytest.approx(-1.0)  # the crop cuts it off
    imagenet = pixels(mean=(0.485, 0.456, 0.406))
    assert imagenet[0, 0, 31] == pytest.approx((1 - 0.485) / 0.5)


def test_augment_flips_and_turns_whole_images() -> None:
    batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    same = augment(batch, "none", torch.Generator().manual_seed(0))
    assert same is batch
    flipped = augment(batch, "flip", torch.Generator().manual_seed(0))
    for x, y in zip(batch, flipped, strict=True):
        assert torch.equal(y, x) or torch.equal(y, x.flip(2))
    symmetries = set()
    for seed in range(20):
        out = augment(batch, "dihedral", torch.Generator().manual_seed(seed))[0]
        assert torch.equal(out.flatten().sort().values, batch[0].flatten().sort().values)
        symmetries.add(tuple(out[0].flatten().tolist()))
    assert len(symmetries) > 4  # rotations as well as mirrors


def test_train_batches_are_full_and_cycle(shapes_dir: Path) -> None:
    dataset = ImageDataset(scan(shapes_dir).samples[:5], ViTConfig(image_size=32, patch_size=8))
    batches = train_batches(dataset, micro_batch=4, seed=0)
    sizes = [len(next(batches)[1]) for _ in range(4)]  # 16 draws from 5 images
    assert sizes == [4, 4, 4, 4]


# --- the recipe -----------------------------------------------------------------------------


def test_new_head_is_zero_but_its_gradient_is_not(shapes_dir: Path) -> None:
    model = _tiny_model()
    assert model.pre_logits is None
    assert not model.head.weight.any() and not model.head.bias.any()
    x, y = next(train_batches(ImageDataset(scan(shapes_dir).samples, model.config), 8, 0))
    F.cross_entropy(model(x).logits, y).backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert model.head.bias.grad is not None and model.head.bias.grad.abs().sum() > 0


def test_head_replaces_pre_logits_and_resize_keeps_cls() -> None:
    torch.manual_seed(0)
    source = ViT(ViTConfig(**TINY, num_classes=1000, representation_size=16))  # grid 4
    cls_before = source.pos_embed[:, 0].clone()
    model = prepare_for_finetune(source, ("a", "b", "c"), image_size=64)
    assert model.config.image_size == 64 and model.config.grid == (8, 8)
    assert model.pos_embed.shape == (1, 1 + 8 * 8, 32)
    assert torch.equal(model.pos_embed[:, 0], cls_before)
    assert model.pre_logits is None and model.head.weight.shape == (3, 32)
    assert model(torch.zeros(1, 3, 64, 64)).logits.shape == (1, 3)
    with pytest.raises(TrainError, match="--image-size 60 is not a multiple of the patch size 8"):
        prepare_for_finetune(model, ("a", "b"), image_size=60)


def test_warmup_then_cosine_to_zero() -> None:
    factor = warmup_cosine(warmup=4, total=20)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(12) == pytest.approx(0.5)
    assert factor(19) < 0.02
    decay = [factor(s) for s in range(4, 20)]
    assert decay == sorted(decay, reverse=True)


def test_train_config_refuses_inconsistent_batches() -> None:
    with pytest.raises(TrainError, match="batch size 10 is not a multiple of micro-batch 4"):
        TrainConfig(batch_size=10, micro_batch=4)
    with pytest.raises(TrainError, match="shift cannot be negative"):
        TrainConfig(shift=-1)
    with pytest.raises(TrainError, match="recolour must be in"):
        TrainConfig(recolour=1.5)


def test_same_seed_same_weights(shapes_dir: Path) -> None:
    samples = scan(shapes_dir, classes=CLASSES).samples
    cfg = TrainConfig(steps=3, batch_size=8, micro_batch=4, warmup_steps=1, augment="dihedral")

    def weights(seed: int) -> dict[str, torch.Tensor]:
        model = _tiny_model(seed)
        seeded = TrainConfig(**{**vars(cfg), "seed": seed})
        train(model, ImageDataset(samples, model.config), seeded, progress=False)
        return model.state_dict()

    torch.set_num_threads(1)
    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_learns_the_tiny_set(shapes_dir: Path) -> None:
    """Not a benchmark: enough steps to show the loss goes down and the head moved."""
    samples = scan(shapes_dir, classes=CLASSES).samples
    model = _tiny_model()
    dataset = ImageDataset(samples, model.config)
    before = evaluate(model, dataset)
    cfg = TrainConfig(steps=30, batch_size=12, micro_batch=12, optimizer="adamw", lr=3e-3)
    result = train(model, dataset, cfg, progress=False)
    after = evaluate(model, dataset)
    assert before.loss == pytest.approx(np.log(6), rel=1e-4)  # zero head: uniform predictions
    assert after.loss < before.loss and result.images_seen == 360
    assert set(after.per_class) == set(CLASSES)


# --- the command line -----------------------------------------------------------------------


def test_cli_writes_a_loadable_checkpoint_and_summary(shapes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main([str(shapes_dir), "--out", str(out), *TINY_ARGS, *FAST, "--val-fraction", "0.2"])
    model = load_native(out)
    assert model.config.labels == SORTED and model.config.image_size == 32
    assert model.head.weight.abs().sum() > 0  # trained away from the zero init
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["images_seen"] == 24
    assert summary["train_images"] + summary["val_images"] == 36 and summary["skipped_images"] == 0
    assert 0 <= summary["val_accuracy"] <= 1 and summary["seconds"] > 0
    assert summary["train"]["optimizer"] == "sgd" and summary["train"]["momentum"] == 0.9
    assert summary["model"]["labels"] == list(SORTED)


def test_cli_fine_tunes_a_checkpoint_at_a_higher_resolution(
    shapes_dir: Path, tmp_path: Path
) -> None:
    source = ViT(ViTConfig(**TINY, num_classes=3, labels=("x", "y", "z")))
    save_native(source, tmp_path / "pretrained")
    out = tmp_path / "ft"
    start = ["--checkpoint", str(tmp_path / "pretrained"), "--image-size", "48"]
    val = ["--val-dir", str(shapes_dir), "--quiet", "--threads", "1"]
    main([str(shapes_dir), "--out", str(out), *start, *val, *FAST])
    model = load_native(out)
    assert model.config.image_size == 48 and model.pos_embed.shape == (1, 1 + 36, 32)
    assert model.config.labels == SORTED and model.head.weight.shape == (6, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_images"] == 36 and summary["source"]["format"] == "native"


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_cli_errors_exit_2_with_a_precise_message(
    shapes_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "out")]
    err = _exit([str(tmp_path / "missing"), *out, *TINY_ARGS], capsys)
    assert "vit-train: error: data directory" in err and "does not exist" in err
    empty = _copy_tree(shapes_dir, tmp_path / "empty")
    (empty / "oval").mkdir()
    err = _exit([str(empty), *out, *TINY_ARGS], capsys)
    assert "no readable images in class folder(s) oval" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    err = _exit([str(shapes_dir), *out, "--checkpoint", str(broken)], capsys)
    assert "vit-train: error:" in err and "config.json" in err
    err = _exit([str(shapes_dir), *out, *TINY_ARGS, "--image-size", "36"], capsys)  # last wins
    assert "image_size 36 is not a multiple of patch_size 8" in err
    err = _exit(
        [str(shapes_dir), *out, *TINY_ARGS, "--batch-size", "6", "--micro-batch", "4"], capsys
    )
    assert "batch size 6 is not a multiple of micro-batch 4" in err
    assert not (tmp_path / "out").exists()


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    argv = [str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--from-scratch"]
    command = [sys.executable, "-m", "model_export.training.cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"vit-train: error: data directory {tmp_path / 'nope'} does not exist" in done.stderr


def test_demo_recipe_runs_end_to_end_in_miniature(tmp_path: Path) -> None:
    """The demo's three stages and its three test sets, through train.py, on a toy-sized recipe."""
    tiny = TrainConfig(steps=2, batch_size=4, micro_batch=4, warmup_steps=1, augment="dihedral")
    adamw = replace(tiny, optimizer="adamw", lr=1e-3)
    recipe = demo.Recipe(
        dim=32, depth=1, heads=2, mlp_dim=64, test_per_class=2, val_fraction=0.25,
        stages=(
            demo.Stage(32, "classic", 4, seed=0, train=adamw),
            demo.Stage(48, "free", 4, seed=1, train=replace(adamw, recolour=0.5)),
            demo.Stage(64, "free", 4, seed=5, train=replace(tiny, recolour=0.5), fresh_head=True),
        ),
    )  # fmt: skip
    summary = demo.run(recipe, tmp_path / "out", tmp_path / "work")
    model = load_native(tmp_path / "out")
    assert model.config.labels == CLASSES and model.config.image_size == 64
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 32)  # 2×2 → 3×3 → 4×4 grid
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))  # tuples come back as lists
    assert list(summary["tests"]) == ["free", "classic", "hue"]
    assert all(t["images"] == 12 for t in summary["tests"].values())
    assert [s["config"]["optimizer"] for s in summary["stages"]] == ["adamw", "adamw", "sgd"]
    assert [s["stage"]["appearance"] for s in summary["stages"]] == ["classic", "free", "free"]
    assert summary["checkpoint_bytes"] == (tmp_path / "out" / "model.safetensors").stat().st_size


def test_cli_fine_tunes_a_hybrid_at_a_non_square_size(shapes_dir: Path, tmp_path: Path) -> None:
    # A stem-only hybrid (stride 4) with 2×2 patches on its map: 8 px per token, a 4×4 grid.
    torch.manual_seed(0)
    hybrid = dict(TINY, patch_size=2, backbone=())
    source = ViT(ViTConfig(**hybrid, num_classes=1000, representation_size=16))
    save_native(source, tmp_path / "pretrained")
    out = tmp_path / "ft"
    start = ["--checkpoint", str(tmp_path / "pretrained"), "--image-size", "32x48"]
    main([str(shapes_dir), "--out", str(out), *start, "--quiet", "--threads", "1", *FAST])
    model = load_native(out)
    assert model.config.backbone == () and model.config.image_size == (32, 48)
    assert model.config.grid == (4, 6) and model.pos_embed.shape == (1, 1 + 24, 32)
    assert model.pre_logits is None and model.head.weight.shape == (6, 32)
    assert model.head.weight.abs().sum() > 0  # zero at the start, trained since
    stem = "patch_embed.backbone.stem.conv.weight"
    assert not torch.equal(model.state_dict()[stem], source.state_dict()[stem])  # fine-tuned too


def test_hybrid_finetune_sizes_are_multiples_of_the_token_stride() -> None:
    model = scratch_model("r-vit-ti32", ("a", "b"), 0, depth=1)
    with pytest.raises(TrainError, match=r"--image-size 224x200 is not a multiple of the token "):
        prepare_for_finetune(model, ("a", "b"), image_size=(224, 200))
    prepared = prepare_for_finetune(model, ("a", "b"), image_size=(224, 256))
    assert prepared.config.grid == (7, 8) and not prepared.head.weight.any()


def test_dihedral_augment_keeps_a_rectangle_its_shape() -> None:
    batch = torch.randn(16, 3, 4, 6)
    out = augment(batch, "dihedral", torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
