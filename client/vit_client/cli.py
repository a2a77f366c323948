"""vit-client: classify, embed or explain image files, folders or globs against a vit-service.

    vit-client classify examples/ --top-k 2
    vit-client embed 'photos/**/*.jpg' --format jsonl > embeddings.jsonl
    vit-client attention examples/star.jpg --png-dir heat/

The API key comes from $VIT_API_KEY. Exit codes: 0 every image answered; 1 some image refused or
failed (each says why in its row); 2 bad arguments or sources naming no image; 3 the server cannot
be reached or refuses the key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vit_client.api import API_KEY_VARIABLE, DEFAULT_URL, Options, Result, run
from vit_client.errors import ClientError, InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER = 0, 1, 2, 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-client",
        description=f"Send images to vit-service, many at once. API key: ${API_KEY_VARIABLE}.",
    )
    p.add_argument("endpoint", choices=("classify", "embed", "attention"))
    p.add_argument("sources", nargs="+", help="image files, folders (searched recursively), globs")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    p.add_argument("--concurrency", type=_at_least_one, default=8, help="requests in flight (8)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    p.add_argument("--retries", type=int, default=5, help="retries per image on 429/503 (5)")
    p.add_argument("--format", choices=("table", "jsonl"), default="table", help="output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--top-k", type=_at_least_one, default=1, help="classify: classes per image (1)")
    p.add_argument("--normalize", action="store_true", help="embed: unit L2 norm")
    p.add_argument("--png-dir", type=Path, help="attention: save each overlay as DIR/<name>.png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        return _fail(f"--url must start with http:// or https://, not {args.url!r}", EXIT_USAGE)
    options = Options(
        url=args.url.rstrip("/"),
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        progress=not args.no_progress,
    )
    try:
        results = run(args.endpoint, args.sources, _params(args), options)
    except InputError as e:
        return _fail(str(e), EXIT_USAGE)
    except ClientError as e:
        return _fail(str(e), EXIT_SERVER)
    if args.png_dir:
        results = _save_pngs(results, args.png_dir)
    lines = _jsonl(results) if args.format == "jsonl" else _table(args.endpoint, results)
    print("\n".join(lines))
    failed = sum(not r.ok for r in results)
    if failed:
        return _fail(f"{failed} of {len(results)} images failed", EXIT_FAILED)
    return EXIT_OK


def _params(args: argparse.Namespace) -> dict[str, Any]:
    if args.endpoint == "classify":
        return {"top_k": args.top_k}
    if args.endpoint == "embed":
        return {"normalize": str(args.normalize).lower()}
    return {"format": "png" if args.png_dir else "json"}


def _save_pngs(results: list[Result], folder: Path) -> list[Result]:
    """Write each overlay to folder/<stem>.png; its result becomes where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for r in results:
        if r.png is not None:
            path = folder / f"{r.path.stem}.png"
            path.write_bytes(r.png)
            r = replace(r, result={"saved": str(path)}, png=None)
        saved.append(r)
    return saved


def _jsonl(results: list[Result]) -> list[str]:
    rows = []
    for r in results:
        row: dict[str, Any] = {"image": str(r.path)}
        if r.error:
            row["error"] = asdict(r.error)
        else:
            row.update(r.result or {})
        rows.append(json.dumps(row))
    return rows


def _table(endpoint: str, results: list[Result]) -> list[str]:
    """Aligned columns: the image, then what the endpoint says about it (or the error)."""
    headers = {
        "classify": ["image", "label", "score", "next"],
        "embed": ["image", "dim", "norm", "first values"],
        "attention": ["image", "label", "score", "peak patch (row, col)"],
    }[endpoint]
    rows = [headers] + [[str(r.path), *_cells(endpoint, r)] for r in results]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows
    ]


def _cells(endpoint: str, r: Result) -> list[str]:
    if r.error:
        return ["error", "", str(r.error)]
    body = r.result or {}
    if "saved" in body:
        return ["saved", "", body["saved"]]
    if endpoint == "classify":
        best, *rest = body["predictions"]
        others = ", ".join(f"{p['label']} {p['score']:.3f}" for p in rest)
        return [best["label"], f"{best['score']:.3f}", others]
    if endpoint == "embed":
        vector = body["embedding"]
        head = ", ".join(f"{v:.4f}" for v in vector[:3])
        return [str(len(vector)), f"{math.hypot(*vector):.4f}", f"{head}, …"]
    grid, best = body["attention"], body["prediction"]
    peak = max((v, i, j) for i, row in enumerate(grid) for j, v in enumerate(row))
    return [best["label"], f"{best['score']:.3f}", f"({peak[1]}, {peak[2]}) {peak[0]:.3f}"]


def _fail(message: str, code: int) -> int:
    print(f"vit-client: {message}", file=sys.stderr)
    return code


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
