"""The baseline: the FastAPI app a tutorial would write. One ONNX Runtime call per request.

    python bench/naive_server.py --bundle B --port 8001

Same decode and preprocessing as the service (so the comparison is about serving, not pixels: the
scaled JPEG decode, the service's default), run in Starlette's thread pool; every request then
makes its own batch-of-one session call, and nothing bounds how many wait: under overload the
queue (and the latency) just grows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from service.inference.outputs import softmax, top_k  # noqa: E402
from vit_core.bundle import FAST, INPUT, LOGITS, load_bundle  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402


def create_app(bundle: Path) -> FastAPI:
    manifest = load_bundle(bundle)
    session = ort.InferenceSession(
        str(bundle / manifest.graphs[FAST].file), providers=["CPUExecutionProvider"]
    )
    prepare = Preprocessor(
        manifest.preprocess, manifest.image_size, 40_000_000, manifest.pixels, scaled_decode=True
    )
    app = FastAPI()

    def predict(data: bytes) -> list[dict[str, object]]:
        pixels = prepare(data).pixels[None]  # (1, *row) as the graph takes it
        (logits,) = session.run([LOGITS], {INPUT: pixels})
        probs = softmax(logits)[0]
        top = top_k(probs[None], 5)[0]
        labels = manifest.labels
        return [{"label": labels[i], "index": int(i), "score": float(probs[i])} for i in top]

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, object]:
        data = await request.body()
        return {"results": [{"predictions": await run_in_threadpool(predict, data)}]}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    dtype = np.uint8 if manifest.pixels.dtype == "uint8" else np.float32
    predict_warm = np.zeros((1, *manifest.pixels.shape(manifest.image_hw)), dtype)
    session.run([LOGITS], {INPUT: predict_warm})
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--port", type=int, default=8001)
    args = p.parse_args()
    uvicorn.run(create_app(args.bundle), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
