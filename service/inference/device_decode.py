"""The decode stage where the model runs: one pipeline definition, placed on the GPU when there is
one and on the CPU otherwise (VIT_DECODE=device; settings.py).

    a request's JPEGs ──nvImageCodec, one batched call──▶ decoded RGB images, left where decoded
                         (nvJPEG on the GPU; its libjpeg-turbo backend on the CPU)
    when their batch forms: each ──resize graph (ONNX Runtime)──▶ its row of the batch buffer
                         (the bundle's resize + crop; CUDA provider on the GPU, CPU provider here)
    the model reads the buffer where it lies (IO binding): on the GPU nothing crosses to the host

Only the placement differs: the same decoder call and the same resize graph, on one device or the
other. The resize graph is the bundle's transform (vit_core.images: resize_plan), spelled as ONNX
Resize with antialiasing, which computes what the host transform computes to within 1 of 255 per
pixel (tests: test_device_decode.py). What nvImageCodec is not given (formats other than JPEG,
CMYK JPEGs, a request whose heat-map needs the picture) goes through the host transform, as
everything does with VIT_DECODE=host; so does a JPEG it fails on, which then answers as the host
path would.

This module needs the gpu extra's nvImageCodec and onnx; it is imported only when device decoding
is asked for. Its CUDA branch has not run on a GPU yet (bench/gpu.sh measures it when one is
lent); its CPU placement is what the tests run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from service.inference.engine_io import CUDA, BatchBuffer
from vit_core.bundle import Preprocess
from vit_core.geometry import Box, Size, hw
from vit_core.images import resize_plan

log = logging.getLogger(__name__)

Placement = Literal["cpu", "cuda"]
_OPSET = 19  # Resize's antialias attribute (18), half_pixel for every mode
_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}
_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman JPEGs: what nvJPEG decodes
# The other frame markers: lossless, hierarchical or arithmetic-coded JPEGs (C4, C8 and CC are
# tables, not frames)
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ResizeGraph:
    """The bundle's resize and crop as one small ONNX graph, for images of any size:

        image (1, h, w, 3) uint8 ──Resize to (rh, rw), antialiased──▶ Slice the (H, W) window
    ──round, clip──▶ (1, H, W, 3) uint8, written where its output is bound (a buffer's row)
    """

    def __init__(self, preprocess: Preprocess, size: Size, placement: Placement) -> None:
        self.preprocess, self.size = preprocess, hw(size)
        providers = [CUDA] if placement == "cuda" else ["CPUExecutionProvider"]
        model = _resize_model(_MODES[preprocess.interpolation], self.size)
        self._session = ort.InferenceSession(model.SerializeToString(), providers=providers)
        self._device = placement

    def write(self, image: DecodedImage, buffer: BatchBuffer, index: int) -> None:
        plan = resize_plan(image.width, image.height, self.preprocess, self.size)
        (oh, ow), left, top = plan.out, plan.left, plan.top
        binding = self._session.io_binding()
        image.bind(binding, "image")
        binding.bind_cpu_input("sizes", np.array([1, 3, plan.height, plan.width], np.int64))
        binding.bind_cpu_input("starts", np.array([top, left], np.int64))
        binding.bind_cpu_input("ends", np.array([top + oh, left + ow], np.int64))
        shape = [1, oh, ow, 3]
        binding.bind_output("rows", buffer.device, 0, np.uint8, shape, buffer.address(index))
        self._session.run_with_iobinding(binding)

    def box(self, image: DecodedImage) -> Box:
        """The part of the picture the model sees, in its own pixels."""
        plan = resize_plan(image.width, image.height, self.preprocess, self.size)
        return plan.box(image.width, image.height)


def _resize_model(mode: str, size: tuple[int, int]) -> onnx.ModelProto:
    oh, ow = size

    def resize(source: str, sizes: str, out: str) -> list[onnx.NodeProto]:
        """One pass, rounded and clipped to 0..255 as Pillow stores it between its passes."""
        return [
            helper.make_node(
                "Resize",
                [source, "", "", sizes],
                [f"{out}_f"],
                mode=mode,
                antialias=1,
                cubic_coeff_a=-0.5,
                coordinate_transformation_mode="half_pixel",
                exclude_outside=1,
                nearest_mode="floor" if mode == "nearest" else "round_prefer_floor",
            ),  # fmt: skip
            helper.make_node("Round", [f"{out}_f"], [f"{out}_r"]),
            helper.make_node("Clip", [f"{out}_r", "lowest", "highest"], [out]),
        ]

    # The host transform resizes in two passes, across then down, with 8-bit pixels between
    # them: a bicubic overshoot at a sharp edge is clipped after the first. Two passes here do
    # the same (one pass in float differs by tens of levels at such edges).
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["planes"], perm=[0, 3, 1, 2]),  # (1, 3, h, w)
        helper.make_node("Shape", ["planes"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "three", "zero"], ["nch"]),  # [1, 3, h]
        helper.make_node("Slice", ["sizes", "three", "four", "zero"], ["rw"]),
        helper.make_node("Concat", ["nch", "rw"], ["across"], axis=0),  # [1, 3, h, rw]
        *resize("planes", "across", "wide"),
        *resize("wide", "sizes", "resized"),  # [1, 3, rh, rw]
        helper.make_node("Slice", ["resized", "starts", "ends", "axes"], ["window"]),
        helper.make_node("Cast", ["window"], ["bytes"], to=TensorProto.UINT8),
        helper.make_node("Transpose", ["bytes"], ["rows"], perm=[0, 2, 3, 1]),  # (1, H, W, 3)
    ]
    constants = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("three", TensorProto.INT64, [1], [3]),
        helper.make_tensor("four", TensorProto.INT64, [1], [4]),
        helper.make_tensor("lowest", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("highest", TensorProto.FLOAT, [], [255.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "h", "w", 3]),
            helper.make_tensor_value_info("sizes", TensorProto.INT64, [4]),
            helper.make_tensor_value_info("starts", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("ends", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("rows", TensorProto.UINT8, [1, oh, ow, 3])],
        constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])


@dataclass(frozen=True)
class DecodedImage:
    """One image as nvImageCodec left it: (h, w, 3) uint8 RGB, in host or device memory."""

    handle: Any  # nvimgcodec.Image: keeps the memory alive until the image is resized
    width: int
    height: int
    device: Placement

    def bind(self, binding: ort.IOBinding, name: str) -> None:
        shape = [1, self.height, self.width, 3]
        if self.device == "cuda":
            address = self.handle.__cuda_array_interface__["data"][0]
            binding.bind_input(name, "cuda", 0, np.uint8, shape, address)
        else:
            binding.bind_cpu_input(name, np.asarray(self.handle.cpu())[None])


@dataclass(frozen=True)
class DeviceRow:
    """A decoded image waiting for its batch: resized into its row when the batch forms."""

    image: DecodedImage
    resize: ResizeGraph

    def write(self, buffer: BatchBuffer, index: int) -> None:
        self.resize.write(self.image, buffer, index)


class DeviceDecoder:
    """nvImageCodec's decoder on the placement's backends, and the resize graph for its rows."""

    def __init__(self, preprocess: Preprocess, size: Size, placement: Placement) -> None:
        from nvidia import nvimgcodec

        self.placement = placement
        if placement == "cuda":
            self._decoder = nvimgcodec.Decoder()  # GPU backends first: hardware, then CUDA
        else:
            self._decoder = nvimgcodec.Decoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)],
            )
        self._params = nvimgcodec.DecodeParams(  # 8-bit RGB, interleaved, upright
            apply_exif_orientation=True,
            color_spec=nvimgcodec.ColorSpec.SRGB,
            sample_format=nvimgcodec.SampleFormat.I_RGB,
        )
        self.resize = ResizeGraph(preprocess, size, placement)
        # One decode() at a time: a Decoder shared by the decode threads is not thread-safe
        # (four at once returned empty images, then aborted the engine with a double free).
        # Each call decodes its request's images as one batch, in parallel inside the library.
        self._one_at_a_time = threading.Lock()

    def decode(self, images: Sequence[bytes]) -> list[DeviceRow | None]:
        """One call for the request's JPEGs this decoder takes; None for the others (and for
        any it fails on): those go through the host transform."""
        taken = [i for i, data in enumerate(images) if takes(data)]
        rows: list[DeviceRow | None] = [None] * len(images)
        if not taken:
            return rows
        try:
            with self._one_at_a_time:
                decoded = self._decoder.decode([images[i] for i in taken], params=self._params)
        except Exception:  # the host path answers for these, as it would without this decoder
            log.warning("nvImageCodec refused a batch of %d; decoding them on the host", len(taken))
            return rows
        for i, image in zip(taken, decoded, strict=True):
            if image is not None and image.num_channels == 3:
                found = DecodedImage(image, image.width, image.height, self.placement)
                rows[i] = DeviceRow(found, self.resize)
        return rows


def takes(data: bytes) -> bool:
    """Whether a file is a JPEG nvImageCodec decodes as the host would: baseline, extended or
    progressive Huffman, with 1 (grey) or 3 (YCbCr) components. CMYK and YCCK JPEGs, whose
    colour conversion differs between decoders, and arithmetic-coded ones are left to Pillow."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while i + 9 < n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in _SOF:
            return data[i + 9] in (1, 3)  # components
        if marker in _OTHER_SOF or marker in (0xDA, 0xD9):  # no frame before the scan: broken
            return False
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


class DeviceBuffer:
    """(rows, *row_shape) of `dtype` in the CUDA device's memory: the batch buffer when images
    are decoded and resized on the GPU, so a batch never crosses to the host and back. A host
    row (an image the GPU decoder did not take) is copied up through a one-node graph."""

    device = "cuda"

    def __init__(self, rows: int, row_shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.dtype, self.shape = np.dtype(dtype), (rows, *row_shape)
        self._value = ort.OrtValue.ortvalue_from_shape_and_type(self.shape, dtype, "cuda", 0)
        self._row_bytes = int(np.prod(row_shape)) * self.dtype.itemsize
        self._upload = _copy_session(row_shape, self.dtype)

    def address(self, index: int) -> int:
        return int(self._value.data_ptr()) + index * self._row_bytes

    def put(self, index: int, row: np.ndarray) -> None:
        binding = self._upload.io_binding()
        binding.bind_cpu_input("x", np.ascontiguousarray(row[None], self.dtype))
        binding.bind_output("y", "cuda", 0, self.dtype, [1, *self.shape[1:]], self.address(index))
        self._upload.run_with_iobinding(binding)


def _copy_session(row_shape: tuple[int, ...], dtype: np.dtype[Any]) -> ort.InferenceSession:
    """One row from wherever its input lies to wherever its output is bound."""
    kind = helper.np_dtype_to_tensor_dtype(dtype)
    shape = [1, *row_shape]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "copy_row",
        [helper.make_tensor_value_info("x", kind, shape)],
        [helper.make_tensor_value_info("y", kind, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    return ort.InferenceSession(model.SerializeToString(), providers=[CUDA])
