"""The device decode stage in its CPU placement (nvImageCodec's CPU backend, the resize graph on
ONNX Runtime's CPU provider): the same pipeline definition a GPU runs, checked here against the
host transform (vit_core.images, Pillow) pixel by pixel, and served end to end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import picture

pytest.importorskip("nvidia.nvimgcodec", reason="the gpu extra's nvImageCodec is not installed")

from hosted import engine_thread  # noqa: E402

from service.inference.device_decode import DeviceDecoder, takes  # noqa: E402
from service.inference.engine_io import HostBuffer  # noqa: E402
from service.settings import Settings  # noqa: E402
from vit_core.bundle import PixelFormat, Preprocess  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402

SQUASH = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic",
                    resize_mode="squash", crop_pct=1.0)  # fmt: skip
CROP = SQUASH.model_copy(update={"resize_mode": "crop", "crop_pct": 0.875})
ROWS = PixelFormat(dtype="uint8", layout="NHWC")  # what the graphs of a schema 2+ bundle take


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def host_and_device(
    data: bytes, p: Preprocess, size: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The same file through the host transform and through the device pipeline on the CPU."""
    host = Preprocessor(p, size, 100_000_000, ROWS)(data).pixels  # (H, W, 3) uint8, full decode
    (row,) = DeviceDecoder(p, size, "cpu").decode([data])
    assert row is not None
    buffer = HostBuffer(2, host.shape, np.dtype(np.uint8), cuda=False)
    buffer.array[...] = 0
    row.write(buffer, 1)
    return host, buffer.array[1]


@pytest.mark.parametrize(
    ("p", "size", "picture_size"),
    [
        (SQUASH, 224, (640, 480)),
        (SQUASH, 224, (300, 500)),
        (CROP, 224, (640, 480)),
        (CROP, (160, 224), (800, 600)),
        (SQUASH.model_copy(update={"interpolation": "bilinear"}), 32, (640, 640)),
        (SQUASH, 224, (224, 224)),
    ],
    ids=[
        "squash-landscape",
        "squash-portrait",
        "crop",
        "crop-non-square",
        "bilinear-32",
        "same-size",
    ],
)
def test_the_resize_graph_computes_the_host_transforms_pixels(
    p: Preprocess, size: int | tuple[int, int], picture_size: tuple[int, int]
) -> None:
    data = jpeg(picture(*picture_size, seed=sum(picture_size)))
    host, device = host_and_device(data, p, size)
    difference = np.abs(host.astype(np.int16) - device)
    # Rounding (the host's fixed point against float) moves a pixel by 1, never more: both
    # resample across first, then down (vit_core/images.py).
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_exif_turned_and_grey_jpegs_come_out_as_the_host_sees_them() -> None:
    turned = picture(320, 200, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90°
    for data in (jpeg(turned, exif=exif), jpeg(turned.convert("L"))):
        host, device = host_and_device(data, SQUASH, 64)
        assert np.percentile(np.abs(host.astype(np.int16) - device), 99.9) <= 1


def test_what_the_decoder_takes_and_what_it_leaves_to_the_host() -> None:
    image = picture(64, 48)
    assert takes(jpeg(image)) and takes(jpeg(image, progressive=True))
    assert takes(jpeg(image.convert("L")))
    assert not takes(jpeg(image.convert("CMYK")))  # colour conversion differs between decoders
    png = io.BytesIO()
    image.save(png, "PNG")
    assert not takes(png.getvalue()) and not takes(b"\xff\xd8\xff") and not takes(b"")
    decoder = DeviceDecoder(SQUASH, 32, "cpu")
    rows = decoder.decode([png.getvalue(), jpeg(image), jpeg(image.convert("CMYK"))])
    assert [row is not None for row in rows] == [False, True, False]


def test_a_request_served_through_the_device_pipeline_answers_as_the_host_one(
    tiny_bundle: Path,
) -> None:
    """The engine with VIT_DECODE=device on a CPU host: JPEGs through nvImageCodec and the resize
    graph, a PNG through the host transform, all in one request and one batch."""
    import asyncio

    images = [jpeg(picture(640, 480, seed=s)) for s in range(3)]
    png = io.BytesIO()
    picture(100, 80, seed=9).save(png, "PNG")
    images.append(png.getvalue())

    def logits(decode: str) -> np.ndarray:
        settings = Settings(bundle=tiny_bundle, providers="cpu", max_batch_size=8, decode=decode)
        with engine_thread(settings) as hosted:
            runtime = hosted.runtime(settings)

            async def ask() -> np.ndarray:
                await runtime.start()
                while not runtime.ready:
                    await asyncio.sleep(0.01)
                loop = asyncio.get_running_loop()
                outcome = await runtime.engine.run(
                    "fast", images, deadline=loop.time() + 60, disconnected=asyncio.Event().wait()
                )
                info = await runtime.engine_info()
                await runtime.close()
                assert info["decode"] == ("device (cpu)" if decode == "device" else "host")
                return outcome.outputs["logits"]

            return asyncio.run(ask())

    np.testing.assert_allclose(logits("device"), logits("host"), rtol=0.02, atol=0.02)
