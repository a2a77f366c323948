"""Images priced before they are decoded: header walks that stop hostile parsers, decoded-bytes
budgets, the memory budget shared by concurrent decodes, and a cheap exact 16-bit conversion."""

from __future__ import annotations

import io
import threading

import hostile
import numpy as np
import pytest
from PIL import Image

from vit_core.bundle import Preprocess
from vit_core.errors import ImageTooLarge, RequestTimeout
from vit_core.image_costs import MAX_JPEG_SEGMENTS, MAX_RLE_PIXELS, check_structure
from vit_core.images import OVERVIEW_SIDE, Preprocessor, _to_8_bit, decode
from vit_core.memory import MemoryBudget

SQUASH = Preprocess(
    mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", resize_mode="squash", crop_pct=1.0
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (hostile.many_markers_jpeg(MAX_JPEG_SEGMENTS + 1), "over 512 header segments"),
        (hostile.junk_jpeg(5000), "over 1024 stray bytes in its header"),
        (hostile.many_chunks_png(10_000), "chunks"),
        (hostile.many_blocks_gif(10_000), "over 4096 blocks before its first frame"),
        (hostile.rle_bmp(2000, 1000), "run-length-encoded BMP is 2000×1000"),
    ],
    ids=["jpeg-markers", "jpeg-junk", "png-chunks", "gif-blocks", "bmp-rle"],
)
def test_headers_that_would_make_the_parser_loop_are_refused_unparsed(
    data: bytes, message: str
) -> None:
    with pytest.raises(ImageTooLarge, match=message):
        decode(data, 40_000_000)


@pytest.mark.parametrize(
    "data",
    [
        hostile.many_markers_jpeg(20),
        hostile.junk_jpeg(16),
        hostile.many_chunks_png(100),
        hostile.many_blocks_gif(100),
        hostile.rle_bmp(1000, MAX_RLE_PIXELS // 1000),
        hostile.grey16_png(300, 200),
    ],
    ids=["jpeg", "jpeg-junk", "png", "gif", "bmp-rle", "png-16-bit"],
)
def test_ordinary_files_inside_the_bounds_still_decode(data: bytes) -> None:
    check_structure(data)
    assert decode(data, 40_000_000).mode == "RGB"


def test_decoded_bytes_count_what_a_mode_costs_not_just_pixels() -> None:
    grey16 = hostile.grey16_png(2000, 1000)  # 2 MP, 16-bit grey: about 19 MiB to decode
    with pytest.raises(ImageTooLarge, match=r"2000×1000 I;16 image takes about 19 MiB; the limit"):
        decode(grey16, 40_000_000, max_bytes=16 << 20)
    assert decode(grey16, 40_000_000, max_bytes=32 << 20).size == (2000, 1000)


def test_sixteen_bit_grey_becomes_eight_bit_exactly_as_rounding_x_over_257() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(_to_8_bit(values), expected)


def test_a_kept_picture_is_an_overview_with_its_box_scaled() -> None:
    data = io.BytesIO()
    Image.new("RGB", (4000, 1000), (9, 9, 9)).save(data, "PNG")
    prepared = Preprocessor(SQUASH, 32, 40_000_000)(data.getvalue(), keep_image=True)
    assert prepared.image is not None and prepared.image.size == (OVERVIEW_SIDE, 256)
    assert prepared.box == pytest.approx((0, 0, OVERVIEW_SIDE, 256))


def test_the_memory_budget_holds_concurrent_decodes_to_its_capacity() -> None:
    budget = MemoryBudget(100)
    inside, peak, lock = [0], [0], threading.Lock()

    def hold(size: int) -> None:
        with budget.hold(size, timeout=30):
            with lock:
                inside[0] += size
                peak[0] = max(peak[0], inside[0])
            threading.Event().wait(0.01)  # overlap with the other threads if the budget allowed
            with lock:
                inside[0] -= size

    threads = [threading.Thread(target=hold, args=(60,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == 60 and budget.held == 0  # never two 60s at once under a 100 budget


def test_an_image_that_cannot_get_memory_in_time_times_out() -> None:
    budget = MemoryBudget(100)
    with (
        budget.hold(80, timeout=1),
        pytest.raises(RequestTimeout, match="decode memory"),
        budget.hold(40, timeout=0.05),
    ):
        pass
