"""Fashion-MNIST data: idx files read exactly, images seen as the service sees a grey PNG."""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from model_export.demo.fashion_data import (
    CLASSES,
    DEFAULT_ROOT,
    PixelDataset,
    Split,
    holdout,
    load,
    png,
    read_idx,
)
from model_export.demo.fashion_train import Recipe, _overridden, main, scratch
from model_export.model.vit import ViTConfig
from model_export.preprocessing import preprocessor
from model_export.training.data import DataError
from model_export.training.recipe import prepare_for_finetune


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fake_split(n: int = 40, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return Split(images, np.arange(n, dtype=np.int64) % 10)


def test_idx_files_round_trip_and_others_are_refused(tmp_path: Path) -> None:
    split = fake_split()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", split.images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", split.labels)
    loaded = load(tmp_path, "train")
    assert np.array_equal(loaded.images, split.images)
    assert np.array_equal(loaded.labels, split.labels) and loaded.labels.dtype == np.int64
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + bytes(8)))
    with pytest.raises(DataError, match="not an unsigned-byte idx file"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is missing: install"):
        load(tmp_path, "test")


def test_pixels_are_the_services_pixels_for_the_grey_png() -> None:
    split = fake_split(n=6)
    config = ViTConfig(image_size=40, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32)
    dataset = PixelDataset(split, config)
    prepare = preprocessor(config)
    for i in range(len(split.labels)):
        x, label = dataset[i]
        assert x.shape == (3, 40, 40) and label == split.labels[i]
        assert np.array_equal(x.numpy(), prepare(png(split.images[i])).pixels)


def test_holdout_is_per_class_disjoint_and_seeded() -> None:
    split = fake_split(n=200)
    train, val = holdout(split, 0.1, seed=3)
    assert len(train.labels) == 180 and np.bincount(val.labels).tolist() == [2] * 10
    rows = {im.tobytes() for im in train.images}
    assert not rows & {im.tobytes() for im in val.images}
    again = holdout(split, 0.1, seed=3)[1]
    assert np.array_equal(again.images, val.images)


@pytest.mark.skipif(
    not (DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (make demo-fashion installs it)",
)
def test_the_installed_dataset_is_the_published_one() -> None:
    train, test = load(DEFAULT_ROOT, "train"), load(DEFAULT_ROOT, "test")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * len(CLASSES)
    assert np.bincount(test.labels).tolist() == [1000] * len(CLASSES)


def test_test_images_are_written_as_the_grey_pngs_a_user_posts(tmp_path: Path) -> None:
    from PIL import Image

    from model_export.demo.fashion_data import write_pngs

    split = fake_split(n=40)
    paths = write_pngs(split, tmp_path, per_class=2)
    assert len(paths) == 20 and paths[0].name == "00000-t-shirt-top.png"
    with Image.open(paths[0]) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (28, 28))
        assert np.array_equal(np.asarray(im), split.images[0])


@pytest.mark.parametrize("hybrid", [True, False])
def test_both_recipes_read_4x4_pixel_tokens_at_both_resolutions(hybrid: bool) -> None:
    # The hybrid's backbone (stride 4) and the pure ViT's 4×4 patches cut the same grid, so the two
    # are compared like for like; a zero head starts pre-training as the paper's code does.
    model = scratch(Recipe() if hybrid else Recipe(backbone=None))
    assert (model.config.backbone is not None) == hybrid
    assert model.config.grid == (7, 7)
    assert not model.head.weight.any()
    prepare_for_finetune(model, CLASSES, image_size=Recipe().finetune_size)
    assert model.config.grid == (8, 8)
    assert model(torch.zeros(2, 3, 32, 32)).logits.shape == (2, 10)


def test_trial_overrides_reach_the_recipe() -> None:
    args = argparse.Namespace(
        pretrain_steps=2000, finetune_steps=200, finetune_size=40, finetune_lr=0.003
    )
    recipe = _overridden(Recipe(), args)
    assert recipe.pretrain.steps == 2000 and recipe.pretrain.warmup_steps == 200  # kept
    assert (recipe.finetune.steps, recipe.finetune.warmup_steps) == (200, 20)
    assert (recipe.finetune_size, recipe.finetune.lr) == (40, 0.003)
    none = argparse.Namespace(
        pretrain_steps=None, finetune_steps=None, finetune_size=None, finetune_lr=None
    )
    assert _overridden(Recipe(), none) == Recipe()


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--finetune-size", "30"], "--finetune-size 30 is not a positive multiple of 4"),
     (["--finetune-lr", "0"], "--finetune-lr 0.0 must be positive")],
)  # fmt: skip
def test_bad_trial_overrides_exit_2_with_one_line(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(option)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)
