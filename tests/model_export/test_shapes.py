"""The synthetic shapes: deterministic, one visible shape per image, written as an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.demo import shapes
from model_export.demo.shapes import BACKGROUNDS, CLASSES, draw_shape, generate


def test_classes_are_the_six_shapes_in_head_order() -> None:
    assert CLASSES == ("circle", "square", "triangle", "star", "cross", "hexagon")


@pytest.mark.parametrize("kind", CLASSES)
def test_same_seed_same_image_other_seed_other_image(kind: str) -> None:
    a, box_a = draw_shape(kind, 64, 3)
    b, box_b = draw_shape(kind, 64, np.random.default_rng(3))
    c, _ = draw_shape(kind, 64, 4)
    assert a.tobytes() == b.tobytes() and box_a == box_b
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("kind", CLASSES)
def test_bbox_holds_exactly_the_shape_on_a_flat_background(kind: str) -> None:
    for seed in range(5):
        image, (left, top, right, bottom) = draw_shape(kind, 96, seed, background="flat")
        pixels = np.asarray(image).astype(int)  # (H, W, 3)
        assert image.mode == "RGB" and image.size == (96, 96)
        assert 0 <= left < right <= 96 and 0 <= top < bottom <= 96
        # The shape spans 30-84% of the side, so it is never a speck nor cut by the frame.
        assert 0.25 * 96 <= max(right - left, bottom - top) <= 0.85 * 96
        changed = np.abs(pixels - pixels[0, 0]).sum(axis=-1) > 0  # (H, W)
        rows, cols = np.nonzero(changed)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (
            left,
            top,
            right,
            bottom,
        )


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_the_shape_contrasts_with_the_background_it_covers(background: str) -> None:
    for seed in range(10):
        image, (left, top, right, bottom) = draw_shape("circle", 128, seed, background)
        pixels = np.asarray(image).astype(float)
        cx, cy = (left + right) // 2, (top + bottom) // 2
        r = (right - left) // 6  # a disc well inside the circle
        inside = pixels[cy - r : cy + r, cx - r : cx + r].reshape(-1, 3).mean(axis=0)
        # The ring just outside the circle: what the shape has to stand out from.
        ring = np.zeros((128, 128), bool)
        yy, xx = np.mgrid[:128, :128]
        d = np.hypot(xx - (left + right - 1) / 2, yy - (top + bottom - 1) / 2)
        radius = (right - left) / 2
        ring[(d > radius + 2) & (d < radius + 6)] = True
        outside = pixels[ring].mean(axis=0)
        luma = np.array([0.299, 0.587, 0.114])
        assert (inside - outside) @ luma > 60  # a light shape on a darker ground


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown shape 'oval'"):
        draw_shape("oval")
    with pytest.raises(ValueError, match="unknown background 'sky'"):
        draw_shape("circle", background="sky")
    with pytest.raises(ValueError, match="too small"):
        draw_shape("circle", 8)


def test_generate_writes_a_deterministic_image_folder(tmp_path: Path) -> None:
    paths = generate(tmp_path / "a", n_per_class=2, seed=5, size=32, fmt="png")
    again = generate(tmp_path / "b", n_per_class=2, seed=5, size=32, fmt="png")
    other = generate(tmp_path / "c", n_per_class=2, seed=6, size=32, fmt="png")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(CLASSES)
    assert [p.relative_to(tmp_path / "a").as_posix() for p in paths[:2]] == [
        "circle/00000.png",
        "circle/00001.png",
    ]
    assert len(paths) == 2 * len(CLASSES)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert all(a.read_bytes() != c.read_bytes() for a, c in zip(paths, other, strict=True))
    # The file on disk is the in-memory drawing of the same per-image seed.
    drawn, _ = draw_shape("star", 32, np.random.default_rng([5, CLASSES.index("star"), 1]))
    assert Image.open(tmp_path / "a/star/00001.png").tobytes() == drawn.tobytes()


def test_module_main_writes_jpegs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shapes.main(["--out", str(tmp_path), "--per-class", "1", "--size", "32"])
    files = sorted(tmp_path.glob("*/*.jpg"))
    assert len(files) == len(CLASSES)
    assert Image.open(files[0]).format == "JPEG"
    assert f"wrote {len(CLASSES)} images" in capsys.readouterr().out


# --- free appearance ------------------------------------------------------------------------


def _shape_and_ground(image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """(2, 3) mean RGB of a patch well inside a circle and of a ring just outside it."""
    pixels = np.asarray(image).astype(float)  # (H, W, 3)
    left, top, right, bottom = box
    cx, cy = (left + right - 1) / 2, (top + bottom - 1) / 2
    radius = (right - left) / 2
    yy, xx = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    d = np.hypot(xx - cx, yy - cy)
    inside = pixels[d < radius / 3].mean(axis=0)
    ring = pixels[(d > radius + 3) & (d < radius + 7)].mean(axis=0)
    return np.stack([inside, ring])


LUMA = np.array([0.299, 0.587, 0.114])


def test_free_shapes_come_lighter_darker_and_in_hue_alone() -> None:
    """Over many seeds, every contrast the issue asks for appears, and every shape stands out."""
    lighter = darker = hue_only = 0
    for seed in range(60):
        image, box = draw_shape("circle", 96, seed, background="flat", appearance="free")
        inside, ground = _shape_and_ground(image, box)
        step = (inside - ground) @ LUMA
        assert np.linalg.norm(inside - ground) > 30, f"seed {seed}: the shape is invisible"
        lighter += step > 30
        darker += step < -30
        hue_only += abs(step) < 15
    assert min(lighter, darker, hue_only) >= 10, (lighter, darker, hue_only)


@pytest.mark.parametrize("appearance, sign", [("lighter", 1), ("darker", -1)])
def test_a_forced_polarity_is_kept_on_every_ground(appearance: str, sign: int) -> None:
    for background in ("flat", "gradient", "noise", "clutter", "texture"):
        for seed in range(4):
            image, box = draw_shape("circle", 96, seed, background, appearance)
            inside, ground = _shape_and_ground(image, box)
            assert sign * (inside - ground) @ LUMA > 25, (background, seed)


def test_hue_shapes_differ_in_colour_not_brightness() -> None:
    for seed in range(20):
        image, box = draw_shape("circle", 96, seed, background="flat", appearance="hue")
        inside, ground = _shape_and_ground(image, box)
        assert abs((inside - ground) @ LUMA) < 15, f"seed {seed}: a brightness step"
        assert np.linalg.norm(inside - ground) > 60, f"seed {seed}: too alike in colour"


@pytest.mark.parametrize("kind", CLASSES)
def test_every_class_is_drawn_in_free_appearance_on_any_canvas(kind: str) -> None:
    sizes, grounds = set(), []
    for seed in range(12):
        image, (left, top, right, bottom) = draw_shape(kind, 128, seed, appearance="free")
        w, h = image.size
        sizes.add((w, h))
        assert max(w, h) == 128 and 0.69 <= w / h <= 1.45
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        grounds.append(float(np.asarray(image).mean()))
    assert len(sizes) > 6  # aspect varies: landscape, portrait, square-ish
    assert max(grounds) - min(grounds) > 60  # dark and bright pictures alike


def test_free_drawing_is_deterministic_and_the_classic_one_unchanged() -> None:
    a, box_a = draw_shape("star", 64, 11, appearance="free")
    b, box_b = draw_shape("star", 64, np.random.default_rng(11), appearance="free")
    assert a.tobytes() == b.tobytes() and box_a == box_b
    classic, _ = draw_shape("star", 64, 11)  # the default stays the light-on-dark generator
    assert classic.tobytes() != a.tobytes()


def test_textures_are_free_grounds_only() -> None:
    image, _ = draw_shape("cross", 64, 1, background="texture", appearance="free")
    assert image.size[0] == 64 or image.size[1] == 64
    with pytest.raises(ValueError, match="unknown background 'texture' for classic shapes"):
        draw_shape("cross", 64, 1, background="texture")
    with pytest.raises(ValueError, match="unknown appearance 'neon'"):
        draw_shape("cross", 64, 1, appearance="neon")


def test_generate_free_writes_jpegs_of_varied_quality(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_per_class=3, seed=2, size=48, appearance="free")
    assert len(paths) == 3 * len(CLASSES)
    qualities = set()
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "JPEG" and max(im.size) == 48
            qualities.add(tuple(im.quantization[0][:4]))  # the tables follow the quality
    assert len(qualities) > 3
