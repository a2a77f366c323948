"""The wheels a lent GPU machine lacks, carried to it in batches that each fit one device call.

    python bench/gpu_wheels.py prepare [--dest .whl] [--total-mib 60]        here: `make gpu-wheels`
    python3 bench/gpu_wheels.py receive .whl/batch-K [--into /tmp/vit-wheels] [--require-all]
    python3 bench/gpu_wheels.py assemble [--into /tmp/vit-wheels]    there (bench/gpu.sh does it)

The GPU machine (.library/device/KINDS.md) has CUDA PyTorch, a CPU-only onnxruntime and no
network; a call carries at most 64 MiB, the repository included. `prepare` downloads, for
CPython 3.12 on manylinux x86_64, onnxruntime-gpu and nvImageCodec (the gpu extra) and the
serving packages that machine lacks, at the versions docker/requirements-gpu.txt pins. A wheel too
big for one call is re-compressed (its zip members as LZMA: a wheel pip installs as it is, ~20 %
smaller than PyPI's deflate, which saves a call) and cut into pieces. Wheels and pieces are then
packed into .whl/batch-1 … batch-N, each small enough to travel with the repository, with a
manifest (every file's sha256) in each. `receive` copies one batch into a folder that outlives the
call (the machine stays warm 30 s between calls); `assemble` joins the pieces and checks every
sha256 before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "docker" / "requirements-gpu.txt"
MiB = 1 << 20
LIMIT_MIB = 64  # what one device call carries: the working tree and the carried paths
MANIFEST = "manifest.json"
INTO = Path("/tmp/vit-wheels")
PYTHON = "3.12"  # the GPU machine's /opt/torch/.venv/bin/python3
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
RECOMPRESS_MIB = 16  # wheels at least this big get their members re-compressed as LZMA

# What the GPU image already holds of the gpu lock's packages (its package list, as read on a
# lent machine): the CUDA and cuDNN wheels PyTorch brings among them.
IMAGE_HAS = (
    "numpy", "pillow", "onnx", "protobuf", "ml-dtypes", "prometheus-client", "packaging",
    "flatbuffers", "setuptools", "uvloop", "nvidia-cublas", "nvidia-cuda-nvrtc",
    "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-curand",
    "nvidia-nvjitlink",
)  # fmt: skip
# What it lacks of the gpu extra and of the serving side. Small ones it has in versions older
# than the lock's pins need (typing-extensions >= 4.16 for pydantic) travel too; they take
# precedence there.
CARRY = (
    "onnxruntime-gpu",
    "nvidia-nvimgcodec-cu13",
    "nvidia-nvjpeg",
    "cykooz-resizer",
    "setproctitle",
    "httptools",
    "fastapi",
    "fastapi-offline",
    "starlette",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "typing-extensions",
    "annotated-types",
    "annotated-doc",
    "uvicorn",
    "h11",
    "click",
    "python-multipart",
    "anyio",
    "idna",
    "opentelemetry-api",
)


@dataclass(frozen=True)
class Piece:
    file: str
    size: int
    sha256: str
    batch: int


def pins(lock: Path = LOCK) -> dict[str, str]:
    """name → version, from the lock's `name==version \\` lines."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock.read_text(), re.M)
    return {name.lower(): version for name, version in found}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def travel_size(root: Path = ROOT) -> int:
    """Bytes of what a device call sends besides the carried paths: tracked files and untracked
    files git does not ignore, and shared/ where the checkout has one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    paths = {root / p.decode() for p in listed if p}
    shared = root / "shared"
    if shared.is_dir():
        paths |= {p for p in shared.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def download(dest: Path, names: tuple[str, ...] = CARRY) -> list[Path]:
    """Each name at the lock's version, for CPython 3.12 on manylinux x86_64 (already-downloaded
    files are kept); the wheels, one per name."""
    versions = pins()
    missing = [n for n in names if n not in versions]
    if missing:
        raise SystemExit(f"{LOCK} pins no version of {', '.join(missing)} (run `make lock`)")
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "--dest",
        str(dest),
        *(f"{n}=={versions[n]}" for n in names),
    ]
    subprocess.run(command, check=True)
    wheels = []
    for name in names:
        stem = re.sub(r"[-_.]+", "_", name) + "-" + versions[name] + "-"
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem)]
        if len(found) != 1:
            raise SystemExit(f"expected one wheel {stem}*.whl in {dest}, found {found}")
        wheels.append(found[0])
    return wheels


def recompress(wheel: Path, dest: Path) -> Path:
    """The same wheel with its members LZMA-compressed (pip reads it through zipfile, which
    decompresses LZMA); made once, reused while the source's sha256 matches."""
    out = dest / wheel.name
    stamp = dest / (wheel.name + ".source-sha256")
    source = sha256(wheel)
    if out.is_file() and stamp.is_file() and stamp.read_text() == source:
        return out
    dest.mkdir(parents=True, exist_ok=True)
    print(f"re-compressing {wheel.name} (LZMA; a few minutes, once)", flush=True)
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(partial, "w", zipfile.ZIP_LZMA) as zout:
        for info in zin.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.external_attr = info.external_attr  # file modes: the .so files stay executable
            member.compress_type = zipfile.ZIP_LZMA
            zout.writestr(member, zin.read(info))
    partial.replace(out)
    stamp.write_text(source)
    return out


def pack(wheels: list[Path], dest: Path, budget: int) -> dict[str, object]:
    """Wheels into dest/batch-1 … batch-N, each at most `budget` bytes: files in the order given,
    a file that does not fit the batch's room cut there (a piece fills the batch, the rest goes
    on); the manifest, which names every piece and its batch, goes into every batch."""
    for old in dest.glob("batch-*"):
        shutil.rmtree(old)
    entries: list[dict[str, object]] = []
    batch, room = 1, budget
    for wheel in wheels:
        data_left, offset, pieces = wheel.stat().st_size, 0, []
        while data_left:
            if room < min(data_left, MiB, budget // 8):  # no room worth a piece: the next batch
                batch, room = batch + 1, budget
            take = min(data_left, room)
            whole = take == data_left and offset == 0
            name = wheel.name if whole else f"{wheel.name}.part-{len(pieces):02d}"
            folder = dest / f"batch-{batch}"
            folder.mkdir(parents=True, exist_ok=True)
            with wheel.open("rb") as f:
                f.seek(offset)
                (folder / name).write_bytes(f.read(take))
            pieces.append(Piece(name, take, sha256(folder / name), batch).__dict__)
            offset, data_left, room = offset + take, data_left - take, room - take
        entries.append(
            {
                "file": wheel.name,
                "size": wheel.stat().st_size,
                "sha256": sha256(wheel),
                "pieces": pieces,
            }
        )
    manifest = {"batches": batch, "budget_bytes": budget, "wheels": entries}
    for k in range(1, batch + 1):
        (dest / f"batch-{k}" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def prepare(dest: Path, total_mib: float) -> int:
    repo = travel_size()
    budget = int(total_mib * MiB) - repo - 64 * 1024  # the manifest, and some slack
    if budget < 8 * MiB:
        raise SystemExit(f"the repository sends {repo / MiB:.1f} MiB: no room for wheels")
    downloaded = download(dest / "download")
    wheels = [
        recompress(w, dest / "lzma") if w.stat().st_size >= RECOMPRESS_MIB * MiB else w
        for w in downloaded
    ]
    wheels.sort(key=lambda w: -w.stat().st_size)
    manifest = pack(wheels, dest, budget)
    print(
        f"\nthe repository sends {repo / MiB:.1f} MiB a call; batches of at most "
        f"{budget / MiB:.1f} MiB (total {total_mib:g} of the {LIMIT_MIB} MiB a call carries):"
    )
    for k in range(1, int(manifest["batches"]) + 1):  # type: ignore[call-overload]
        folder = dest / f"batch-{k}"
        carried = [p for p in folder.iterdir() if p.name != MANIFEST]
        size = sum(p.stat().st_size for p in folder.iterdir())
        shown = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        print(
            f"  {shown}: {size / MiB:5.1f} MiB in {len(carried)} wheel(s) or piece(s); "
            f"{(size + repo) / MiB:.1f} MiB with the repository"
        )
    print("\n" + plan(int(manifest["batches"]), dest))  # type: ignore[call-overload]
    return 0


def plan(batches: int, dest: Path = ROOT / ".whl") -> str:
    """The device calls, in order, as the lead makes them (back to back: 30 s warm between)."""
    rel = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
    lines = ["device calls, back to back (each within 30 s of the last one's answer):"]
    for k in range(1, batches + 1):
        command = f"python3 bench/gpu_wheels.py receive {rel}/batch-{k}"
        if k == batches:
            command += " --require-all && bash bench/gpu.sh --wheels /tmp/vit-wheels --out $OUT"
        limit = "600" if k == batches else "120"
        lines.append(f'  {k}. run command="{command}" carry=["{rel}/batch-{k}"] timeout_s={limit}')
    return "\n".join(lines)


def receive(batch: Path, into: Path, require_all: bool = False) -> int:
    """Copy one batch's files into `into` (checked against the manifest), and say which batches
    are there and which are still to come; 1 for a damaged file, or (require_all) a batch still
    missing: the last call then ends before bench/gpu.sh spends the machine's time without
    them (the machine went back between calls, or a call was skipped)."""
    manifest = json.loads((batch / MANIFEST).read_text())
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy2(batch / MANIFEST, into / MANIFEST)
    bad = []
    for entry in manifest["wheels"]:
        for piece in entry["pieces"]:
            source = batch / piece["file"]
            if source.is_file():
                shutil.copy2(source, into / piece["file"])
                if sha256(into / piece["file"]) != piece["sha256"]:
                    bad.append(piece["file"])
    have, missing = _batches(manifest, into)
    print(f"received {batch}: batches present {have}, still to come {missing or 'none'}")
    if bad:
        print(f"sha256 mismatch (send its batch again): {', '.join(bad)}", file=sys.stderr)
    if require_all and missing:
        print(f"batches {missing} are missing: send them again, then this one", file=sys.stderr)
    return 1 if bad or (require_all and missing) else 0


def _batches(manifest: dict[str, object], into: Path) -> tuple[list[int], list[int]]:
    wanted: dict[int, bool] = {}
    for entry in manifest["wheels"]:  # type: ignore[attr-defined]
        for piece in entry["pieces"]:
            present = (into / piece["file"]).is_file()
            wanted[piece["batch"]] = wanted.get(piece["batch"], True) and present
    return sorted(k for k, ok in wanted.items() if ok), sorted(
        k for k, ok in wanted.items() if not ok
    )


def assemble(into: Path) -> int:
    """Join each wheel's pieces into into/wheels/, checking every sha256; 1 if any is missing or
    wrong (the message says which batch to send again)."""
    manifest_path = into / MANIFEST
    if not manifest_path.is_file():
        print(f"no {manifest_path}: no batch was received (run the receive calls first)")
        return 1
    manifest = json.loads(manifest_path.read_text())
    out = into / "wheels"
    out.mkdir(exist_ok=True)
    problems = []
    for entry in manifest["wheels"]:
        target = out / entry["file"]
        if target.is_file() and sha256(target) == entry["sha256"]:
            continue
        absent = [p for p in entry["pieces"] if not (into / p["file"]).is_file()]
        if absent:
            problems.append(
                f"{entry['file']}: batch {sorted({p['batch'] for p in absent})} not received"
            )
            continue
        with target.open("wb") as f:
            for piece in entry["pieces"]:
                with (into / piece["file"]).open("rb") as part:
                    shutil.copyfileobj(part, f, 16 * MiB)
        if sha256(target) != entry["sha256"]:
            target.unlink()
            batches = sorted({p["batch"] for p in entry["pieces"]})
            problems.append(f"{entry['file']}: sha256 mismatch (send batches {batches} again)")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(manifest['wheels'])} wheels assembled and checked in {out}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download, re-compress, cut and batch (here)")
    prep.add_argument("--dest", type=Path, default=ROOT / ".whl")
    prep.add_argument(
        "--total-mib",
        type=float,
        default=60,
        help="a batch and the repository together, at most (the limit is 64)",
    )
    rec = sub.add_parser("receive", help="copy a carried batch where the next calls find it")
    rec.add_argument("batch", type=Path)
    rec.add_argument("--into", type=Path, default=INTO)
    rec.add_argument("--require-all", action="store_true", help="1 unless every batch is here")
    asm = sub.add_parser("assemble", help="join the pieces and check them (there)")
    asm.add_argument("--into", type=Path, default=INTO)
    args = p.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.dest.resolve(), args.total_mib)
    if args.command == "receive":
        return receive(args.batch, args.into, args.require_all)
    return assemble(args.into)


if __name__ == "__main__":
    sys.exit(main())
