"""How a batch reaches a graph and its answers come back: one preallocated host buffer, IO
binding, and on CUDA the provider's options and (behind a setting) CUDA graph replay.

    preprocess threads ─rows─▶ HostBuffer (max_batch, *row), pinned on CUDA
                                   │ its first B rows, bound by address: no copy on the CPU,
                                   ▼ one DMA to the device on CUDA
                               session (IO binding) ──▶ outputs copied back once each

Pinned (page-locked) host memory is what lets the CUDA copy engine read the batch directly; a
pageable buffer is first staged through a driver-owned pinned one, a second copy per batch. ORT
allocates it (HOST_ACCESSIBLE memory of the CUDA device) so no CUDA library is needed here.

Nothing in this file has run on a GPU yet: on the CPU provider the buffer is ORT's CPU memory and
the binding path is the one the tests exercise; the CUDA branches follow ORT's documented API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from service.settings import ConvSearch, Settings
from vit_core.bundle import INPUT

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class CudaOptions:
    """The CUDA provider's options this service sets rather than inherits (settings.py: why)."""

    conv_algo_search: ConvSearch = "EXHAUSTIVE"
    tf32: bool = False
    cuda_graphs: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CudaOptions:
        return cls(settings.cuda_conv_algo_search, settings.cuda_tf32, settings.cuda_graphs)

    def provider_options(self) -> dict[str, str]:
        return {
            "device_id": "0",
            # Warm-up runs the largest batch first, so the arena reaches its peak at once; growing
            # by what is asked, not the next power of two, keeps it near that peak.
            "arena_extend_strategy": "kSameAsRequested",
            # cuDNN tries every convolution algorithm on a shape's first run: warm-up's, never a
            # request's. The patch embedding (a hybrid's whole ResNet) is the graphs' only Conv.
            "cudnn_conv_algo_search": self.conv_algo_search,
            # TF32 rounds matmul inputs to 10 mantissa bits: off, an fp32 bundle answers as the
            # export check measured it (1e-4); fp16 bundles do not use it either way.
            "use_tf32": "1" if self.tf32 else "0",
            "enable_cuda_graph": "1" if self.cuda_graphs else "0",
        }


class DeviceRow(Protocol):
    """An image the decode stage left where it was decoded (service/inference/device_decode.py):
    it is resized into its row of the batch buffer when its batch forms."""

    def write(self, buffer: BatchBuffer, index: int) -> None: ...


Row = np.ndarray | DeviceRow  # a row as the graphs take it (host), or an image still to resize


class BatchBuffer(Protocol):
    """Where a batch's rows are written and the graphs read them: host memory (pinned on CUDA)
    or, when images are decoded on the GPU, the GPU's own."""

    device: str  # "cpu" or "cuda"
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # (rows, *row)

    def address(self, index: int) -> int:
        """Where row `index` starts."""
        ...

    def put(self, index: int, row: np.ndarray) -> None:
        """A host row into row `index`."""
        ...


class HostBuffer:
    """(rows, *row_shape) of `dtype`, allocated once by ONNX Runtime; `array` is a numpy view of
    the same memory (no copy), into which each image is written in its row."""

    device = "cpu"  # pinned or not, the graphs read it from host memory

    def __init__(self, rows: int, row_shape: tuple[int, ...], dtype: np.dtype[Any], cuda: bool):
        shape = (rows, *row_shape)
        self.dtype, self.shape = np.dtype(dtype), shape
        # Kept: the numpy view does not own the memory, this OrtValue does.
        self._value = _pinned(shape, dtype) if cuda else None
        if cuda and self._value is None:
            log.warning("no pinned host memory from ONNX Runtime; batches take a staging copy")
        self.pinned = self._value is not None
        if self._value is None:
            self._value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype)
        self.array: np.ndarray = self._value.numpy()
        assert self.array.ctypes.data == self._value.data_ptr(), "the buffer must not be a copy"

    def address(self, index: int) -> int:
        return int(self.array[index].ctypes.data)

    def put(self, index: int, row: np.ndarray) -> None:
        self.array[index] = row


def _pinned(shape: tuple[int, ...], dtype: np.dtype[Any]) -> ort.OrtValue | None:
    """An OrtValue in the CUDA device's host-accessible (pinned) memory, as ORT's EP devices
    describe it; None where this ONNX Runtime lists no such memory or cannot allocate it."""
    for device in ort.get_ep_devices():
        memory = device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
        if device.ep_name != CUDA or memory is None:
            continue
        try:
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, memory_info=memory)
        except Exception as e:  # ORT raises its own types; a pageable buffer still works
            log.warning("pinned host memory could not be allocated (%s)", e)
            continue
        if value.numpy().ctypes.data == value.data_ptr():  # writable in place, not a copy
            return value
    return None


class BoundRunner:
    """IO binding: the input bound by address where it lies, outputs left on `device` (the CPU,
    or the GPU) and copied back once each."""

    def __init__(self, session: ort.InferenceSession, names: list[str], device: str) -> None:
        self._session, self._names, self._device = session, names, device

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.run_at("cpu", x.ctypes.data, x.dtype, list(x.shape))

    def run_at(
        self, device: str, address: int, dtype: np.dtype[Any], shape: list[int]
    ) -> list[np.ndarray]:
        """The input bound where it lies in `device`'s memory: a host array, or rows the GPU
        wrote (device_decode.py)."""
        binding = self._session.io_binding()
        binding.bind_input(INPUT, device, 0, dtype, shape, address)
        for name in self._names:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


@dataclass(frozen=True)
class _Slot:
    """One batch size's captured CUDA graph: device tensors at fixed addresses, and its id."""

    binding: ort.IOBinding
    input: ort.OrtValue
    outputs: dict[str, ort.OrtValue]
    options: ort.RunOptions


class GraphReplayRunner:
    """CUDA graphs: a graph replays kernels at the addresses it was captured with, so each batch
    size gets its own device input and outputs, bound once, and its own gpu_graph_id. A run
    copies the batch into that input and replays; warm-up's first run of a size captures it."""

    def __init__(self, session: ort.InferenceSession, names: list[str]) -> None:
        self._session, self._names = session, names
        self._slots: dict[int, _Slot] = {}

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        slot = self._slots.get(len(x)) or self._slot(x)
        slot.input.update_inplace(x)  # host → device, from the pinned buffer
        self._session.run_with_iobinding(slot.binding, slot.options)
        return [slot.outputs[name].numpy() for name in self._names]

    def _slot(self, x: np.ndarray) -> _Slot:
        b = len(x)
        binding = self._session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype, "cuda", 0)
        binding.bind_ortvalue_input(INPUT, device_input)
        outputs = {}
        for out in self._session.get_outputs():  # every one: a replay writes them all
            shape = [b, *out.shape[1:]]  # only the batch axis is dynamic
            dtype = np.float16 if out.type == "tensor(float16)" else np.float32
            outputs[out.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0)
            binding.bind_ortvalue_output(out.name, outputs[out.name])
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(b))
        self._slots[b] = _Slot(binding, device_input, outputs, options)
        return self._slots[b]
