"""vit-export --check-images: the self-check on the user's own pictures instead of drawn shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from model_export.export.exporter import main
from model_export.formats.checkpoints import save_native
from model_export.model.vit import ViT
from tests.conftest import picture
from vit_core.bundle import FAST, load_bundle


def test_cli_checks_on_every_image_in_the_folder_and_skips_other_files(
    random_vit: ViT, tmp_path: Path
) -> None:
    save_native(random_vit, tmp_path / "ckpt")
    images = tmp_path / "mine"
    (images / "nested").mkdir(parents=True)
    picture(50, 40, seed=1).save(images / "a.png")
    picture(30, 60, seed=2).save(images / "nested" / "b.jpg")
    Image.new("L", (20, 20), 128).save(images / "c.png")  # greyscale: decoded to RGB as served
    (images / "labels.txt").write_text("not an image\n")
    out = tmp_path / "bundle"
    assert main([str(tmp_path / "ckpt"), "--out", str(out), "--check-images", str(images)]) == 0
    assert load_bundle(out).validation[FAST].images == 2 * 3  # each picture with a noise twin


def test_cli_refuses_a_folder_without_images(
    random_vit: ViT, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_native(random_vit, tmp_path / "ckpt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing to see\n")
    args = [str(tmp_path / "ckpt"), "--out", str(tmp_path / "bundle")]
    assert main([*args, "--check-images", str(tmp_path / "empty")]) == 2
    assert "check images: no image file in" in capsys.readouterr().err
    assert main([*args, "--check-images", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()
