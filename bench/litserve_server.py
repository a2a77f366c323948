"""LitServe serving the same bundle, as its documentation writes an image classifier.

    PYTHON -m pip install litserve onnxruntime pillow numpy cykooz.resizer  # its own environment
    PYTHON bench/litserve_server.py --bundle B --port 8002 [--max-batch-size 8]

The same decode and preprocessing as the service (vit_core's Preprocessor with the service's
default scaled decode, on the same SIMD resampling where cykooz.resizer is installed) and the same
ONNX graph on ONNX Runtime's CPU provider, so the comparison is about serving. LitServe reads the
request in its API server process and hands it to a worker process (one per device by default) over
a queue; with --max-batch-size above 1 it batches up to that many requests within --batch-timeout.
Requests are multipart uploads with one "file" part, as LitServe's image examples take them; the
answer is the top-5 as the service's /classify gives it. LitServe is not a dependency of this
project: run this with an interpreter that has it (bench/load.py --litserve-python).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from service.inference.outputs import softmax, top_k  # noqa: E402  (numpy only)
from vit_core.bundle import FAST, INPUT, LOGITS, load_bundle  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402

TOP = 5


class ClassifyAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, bundle: Path, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/classify"
        )
        self.bundle = bundle

    def setup(self, device: str) -> None:
        manifest = load_bundle(self.bundle)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the service
        graph = str(self.bundle / manifest.graphs[FAST].file)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.labels = manifest.labels
        self.prepare = Preprocessor(
            manifest.preprocess, manifest.image_size, 40_000_000, manifest.pixels,
            scaled_decode=True,
        )  # fmt: skip

    # Unannotated: LitServe reads the annotation to choose how to read the request (none: the
    # request's form, for a multipart upload).
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.prepare(request["file"].file.read()).pixels  # (*row) as the graph takes it

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        pixels = x if x.ndim == 4 else x[None]
        (logits,) = self.session.run([LOGITS], {INPUT: pixels})
        return logits if x.ndim == 4 else logits[0]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, logits: np.ndarray) -> dict[str, Any]:
        probs = softmax(logits[None])[0]  # (K,): the service's own softmax and top-k
        top = top_k(probs[None], TOP)[0]
        found = [{"label": self.labels[i], "index": int(i), "score": float(probs[i])} for i in top]
        return {"results": [{"predictions": found}]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    args = p.parse_args()
    api = ClassifyAPI(args.bundle.resolve(), args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", timeout=60, healthcheck_path="/readyz")
    server.run(port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
