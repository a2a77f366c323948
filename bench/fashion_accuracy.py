"""Fashion-MNIST test accuracy through the service, against the same checkpoint in PyTorch.

    python bench/fashion_accuracy.py [--bundle models/fashion] [--checkpoint checkpoints/fashion]

Starts `vit-serve` on 127.0.0.1 with the bundle, posts the official 10,000 test images as the
greyscale PNGs a user would send (64 per request, /classify?top_k=1), and scores the answers.
The same images go through the PyTorch checkpoint in-process (the service's transform, then the
model), so the two top-1 figures and their image-by-image agreement can be compared. Prints one
JSON object and writes it to <checkpoint>/service_test.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from servers import ROOT, free_port, service_command, serving

from model_export.demo.fashion_data import CLASSES, DEFAULT_ROOT, PixelDataset, load, png
from model_export.formats.checkpoints import load_checkpoint
from model_export.training.data import eval_batches

PER_REQUEST = 64  # the service's default max_images_per_request


def through_service(url: str, images: list[bytes]) -> np.ndarray:
    """(N,) predicted class index for each PNG, as the service answers."""
    indices = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(images), PER_REQUEST):
            chunk = images[start : start + PER_REQUEST]
            files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(chunk)]
            answer = client.post("/classify?top_k=1", files=files)
            answer.raise_for_status()
            indices += [r["predictions"][0]["index"] for r in answer.json()["results"]]
    return np.asarray(indices)


@torch.no_grad()
def in_process(checkpoint: Path, split: object) -> np.ndarray:
    model = load_checkpoint(checkpoint).model.eval()
    dataset = PixelDataset(split, model.config)  # type: ignore[arg-type]
    return torch.cat([model(x).logits.argmax(1) for x, _ in eval_batches(dataset, 256)]).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "fashion")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "fashion")
    p.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    args = p.parse_args()
    test = load(args.data, "test")
    images = [png(im) for im in test.images]
    torch.set_num_threads(1)
    torch_guess = in_process(args.checkpoint, test)
    command = service_command(args.bundle, free_port(), 32, 5, 256)  # batches of 32, 5 ms window
    with serving({"service": command}, timeout=600) as running:
        url = running.urls["service"]
        started = time.perf_counter()
        served = through_service(url, images)
        seconds = time.perf_counter() - started
    truth = test.labels
    result = {
        "test_images": len(truth),
        "service_accuracy": float((served == truth).mean()),
        "in_process_accuracy": float((torch_guess == truth).mean()),
        "agreement": float((served == torch_guess).mean()),
        "service_per_class": {
            name: float((served[truth == k] == k).mean()) for k, name in enumerate(CLASSES)
        },
        "service_seconds": round(seconds, 1),
        "requests": -(-len(images) // PER_REQUEST),
        "command": " ".join(["python", "bench/fashion_accuracy.py", *sys.argv[1:]]),
    }
    (args.checkpoint / "service_test.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
