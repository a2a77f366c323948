"""The engine's device decode stage alone: images/s, and its pixels against the exact transform.

    python bench/device_decode.py [--placement cpu|cuda] [--batches 32 128] [--seconds 2]

640×480 photo-like JPEGs (bench/pictures.py) go through what VIT_DECODE=device runs in the engine
(service/inference/device_decode.py): one batched nvImageCodec decode of a request's JPEGs, then
each image's resize graph writing its row of the batch buffer (device memory on CUDA, host memory
on the CPU). The rows are then read back and compared with vit_core.images.Preprocessor, the host
transform every bundle was checked with (Pillow). The host transform's own images/s, on one
thread and on every core, is measured beside it on the same pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import HEIGHT, WIDTH, photos  # noqa: E402
from vit_core.bundle import PixelFormat, Preprocess  # noqa: E402
from vit_core.geometry import hw  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402

ROWS = PixelFormat(dtype="uint8", layout="NHWC")  # what the bundles' graphs take
MAX_PIXELS = 100_000_000
MIN_RUNS = 3


def rows_to_host(buffer: Any, count: int) -> np.ndarray:
    """The buffer's first `count` rows as a host array: a copy of a host buffer, or a device
    buffer read through a one-node graph bound at its address."""
    if getattr(buffer, "device", "cpu") == "cpu":
        return np.array(buffer.array[:count])
    import onnxruntime as ort
    from onnx import TensorProto, helper

    shape = [count, *buffer.shape[1:]]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "read_rows",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    binding = session.io_binding()
    binding.bind_input("x", "cuda", 0, np.uint8, shape, buffer.address(0))
    binding.bind_output("y", "cpu")
    session.run_with_iobinding(binding)
    return np.asarray(binding.copy_outputs_to_cpu()[0])


def batch_buffer(placement: str, rows: int, row_shape: tuple[int, ...]) -> Any:
    """Where the engine writes a batch's rows for this placement."""
    if placement == "cuda":
        from service.inference.device_decode import DeviceBuffer

        return DeviceBuffer(rows, row_shape, np.dtype(np.uint8))
    from service.inference.engine_io import HostBuffer

    return HostBuffer(rows, row_shape, np.dtype(np.uint8), cuda=False)


def timed(work: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(fastest, median) seconds of `work`, after one untimed run; at least MIN_RUNS runs."""
    work()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < MIN_RUNS or time.perf_counter() < deadline:
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times), float(np.median(times))


def measure(
    placement: str,
    preprocess: Preprocess,
    size: int | tuple[int, int],
    batches: list[int],
    seconds: float,
    host_threads: int | None = None,
) -> dict[str, Any]:
    """Images/s of the device decode stage at each batch size, of decode alone, and of the host
    transform; and the stage's pixels against the host transform's."""
    from service.inference.device_decode import DeviceDecoder

    images = photos(max(batches))
    decoder = DeviceDecoder(preprocess, size, placement)  # type: ignore[arg-type]
    h, w = hw(size)
    buffer = batch_buffer(placement, max(batches), (h, w, 3))
    result: dict[str, Any] = {
        "placement": placement,
        "picture": f"{WIDTH}×{HEIGHT} JPEG, q90",
        "jpeg_kib": round(np.mean([len(i) for i in images]) / 1024, 1),
        "batches": {},
    }

    def decode_and_write(batch: list[bytes]) -> int:
        rows = decoder.decode(batch)
        for index, row in enumerate(rows):
            if row is not None:
                row.write(buffer, index)
        return sum(row is None for row in rows)  # left to the host transform

    for b in batches:
        batch = images[:b]
        fastest, median = timed(lambda batch=batch: decode_and_write(batch), seconds)
        decode_only, _ = timed(lambda batch=batch: decoder.decode(batch), seconds / 2)
        result["batches"][str(b)] = {
            "images_per_s": b / fastest,
            "images_per_s_median": b / median,
            "decode_only_images_per_s": b / decode_only,
            "left_to_host": decode_and_write(batch),
        }

    # The pixels: every image of the largest batch, written, read back, against Pillow's.
    b = max(batches)
    decode_and_write(images[:b])
    device = rows_to_host(buffer, b).astype(np.int16)
    exact = Preprocessor(preprocess, size, MAX_PIXELS, ROWS)
    host = np.stack([exact(data).pixels for data in images[:b]]).astype(np.int16)
    difference = np.abs(device - host)
    result["pixels"] = {
        "images": b,
        "max_abs": int(difference.max()),
        "mean_abs": float(difference.mean()),
        "p99_9_abs": float(np.percentile(difference, 99.9)),
        "share_over_1": float((difference > 1).mean()),
    }

    threads = host_threads or os.cpu_count() or 1
    one, _ = timed(lambda: [exact(data) for data in images[:b]], seconds)
    with ThreadPoolExecutor(threads) as pool:
        every, _ = timed(lambda: list(pool.map(exact, images[:b])), seconds)
    result["host"] = {
        "threads": threads,
        "one_thread_images_per_s": b / one,
        "all_threads_images_per_s": b / every,
    }
    return result


def table(result: dict[str, Any], cuda_columns: bool = True) -> str:
    """Markdown: images/s per batch size (decode + resize into the batch buffer, and decode
    alone), the host transform beside it, then the pixel comparison."""
    where = "GPU (nvJPEG)" if result["placement"] == "cuda" else "CPU (nvImageCodec's CPU backend)"
    lines = [
        "| stage | batch | images/s (fastest run) | images/s (median run) | left to the host |",
        "|---|---:|---:|---:|---:|",
    ]
    for b, row in result["batches"].items():
        lines.append(
            f"| decode + resize into the batch buffer, on the {where} | {b} | "
            f"{row['images_per_s']:.0f} | {row['images_per_s_median']:.0f} | "
            f"{row['left_to_host']} |"
        )
        lines.append(f"| decode alone | {b} | {row['decode_only_images_per_s']:.0f} | | |")
    host = result["host"]
    lines.append(
        f"| host transform (Pillow), 1 thread | {b} | {host['one_thread_images_per_s']:.0f} | | |"
    )
    lines.append(
        f"| host transform (Pillow), {host['threads']} threads | {b} | "
        f"{host['all_threads_images_per_s']:.0f} | | |"
    )
    p = result["pixels"]
    lines += [
        "",
        "| pixels against the exact host transform | images | max abs | mean abs | 99.9th pct | "
        "share > 1 |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {result['placement']} | {p['images']} | {p['max_abs']} | {p['mean_abs']:.4f} | "
        f"{p['p99_9_abs']:.1f} | {p['share_over_1']:.2e} |",
    ]
    if not cuda_columns:
        lines.append("\n(no GPU: the stage ran in its CPU placement)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--placement", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    preprocess = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic",
                            resize_mode="squash", crop_pct=1.0)  # fmt: skip  # ViT-B/16's
    result = measure(args.placement, preprocess, args.size, args.batches, args.seconds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
