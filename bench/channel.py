"""What the channel between a front and the engine costs, alone: CPU per image on each side.

    python bench/channel.py [--requests 20000] [--in-flight 64] [--images 1] [--transport zmq]

The real channel code (service/channel/: frames, EngineClient, ChannelServer) in two processes on
a Unix socket, with the pipeline replaced by one that answers at once (a bundle's rows for a
6-class model: logits and a 128-float embedding): what is left is framing, copies, the socket
and the event loops. The front sends 640×480 JPEGs (~50 kB), --images per request, --in-flight
requests at a time. Prints requests/s and the CPU each process spent, per image.

--transport zmq carries the same requests and answers over ZeroMQ instead (pyzmq's asyncio
DEALER → ROUTER on ipc://, zero-copy frames, a task per request on the engine side as the channel
has): the alternative vLLM uses between its API servers and its engine, measured here in the same
shape so that the channel's choice is a measurement (docs/design.md, "The channel").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import photos  # noqa: E402
from bench.rawload import cpu_seconds, own_cpu_seconds  # noqa: E402
from service.channel.engine_side import ChannelServer  # noqa: E402
from service.channel.front_side import EngineClient  # noqa: E402
from service.channel.messages import Outcome  # noqa: E402
from vit_core.bundle import EMBEDDING, FAST, LOGITS  # noqa: E402


class AnswersAtOnce:
    """Stands where the pipeline is: every request's rows, without decoding or running."""

    async def run(self, graph: str, images: Any, *, disconnected: Any, **_: Any) -> Outcome:
        disconnected.close()  # the CANCEL wait: nobody cancels here
        n = len(images)
        rows = {LOGITS: np.zeros((n, 6), np.float32), EMBEDDING: np.zeros((n, 128), np.float32)}
        return Outcome(rows, 0.0, 0.0, [])


def engine(address: str, ready: Any) -> None:
    async def serve() -> None:
        server = ChannelServer(AnswersAtOnce(), ((224, 224, 3), np.dtype(np.uint8)), dict)  # type: ignore[arg-type]
        await asyncio.get_running_loop().create_unix_server(server.protocol, address)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def front(address: str, images: list[bytes], requests: int, in_flight: int) -> float:
    client = await EngineClient.connect(address, 10)
    loop = asyncio.get_running_loop()
    never = asyncio.Event()
    left = iter(range(requests))

    async def worker() -> None:
        for _ in left:
            await client.run(FAST, images, deadline=loop.time() + 60, disconnected=never.wait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


def answer_rows(n: int) -> list[np.ndarray]:
    return [np.zeros((n, 6), np.float32), np.zeros((n, 128), np.float32)]  # as AnswersAtOnce


def zmq_engine(address: str, ready: Any) -> None:
    import zmq.asyncio

    async def answer(sock: Any, frames: list[Any]) -> None:
        ident, head, images = frames[0], frames[1], frames[2:]
        await sock.send_multipart([ident, head, *answer_rows(len(images))], copy=False)

    async def serve() -> None:
        sock = zmq.asyncio.Context().socket(zmq.ROUTER)
        sock.bind(address)
        ready.set()
        loop = asyncio.get_running_loop()
        while True:
            frames = await sock.recv_multipart(copy=False)
            loop.create_task(answer(sock, frames))

    asyncio.run(serve())


async def zmq_front(address: str, images: list[bytes], requests: int, in_flight: int) -> float:
    import zmq.asyncio

    sock = zmq.asyncio.Context().socket(zmq.DEALER)
    sock.connect(address)
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[list[np.ndarray]]] = {}
    ids, left = itertools.count(), iter(range(requests))

    async def read() -> None:
        while True:
            head, *rows = await sock.recv_multipart(copy=False)
            (request,) = struct.unpack_from("<Q", head.buffer)
            n = len(images)
            waiting.pop(request).set_result(
                [np.frombuffer(r.buffer, np.float32).reshape(n, -1) for r in rows]
            )

    async def worker() -> None:
        for _ in left:
            request = next(ids)
            waiting[request] = loop.create_future()
            await sock.send_multipart([struct.pack("<QI", request, len(images)), *images])
            await waiting[request]

    reader = loop.create_task(read())
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall = time.perf_counter() - started
    reader.cancel()
    return wall


TRANSPORTS = {"unix": (engine, front), "zmq": (zmq_engine, zmq_front)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--images", type=int, default=1, help="images per request")
    p.add_argument("--transport", choices=TRANSPORTS, default="unix", help="zmq needs pyzmq")
    args = p.parse_args()
    images = photos(args.images)
    serve, send = TRANSPORTS[args.transport]
    with tempfile.TemporaryDirectory() as folder:
        address = os.path.join(folder, "engine.sock")
        if args.transport == "zmq":
            address = f"ipc://{address}"
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Event()
        process = spawn.Process(target=serve, args=(address, ready), daemon=True)
        process.start()
        ready.wait()
        before = own_cpu_seconds(), cpu_seconds(process.pid)  # type: ignore[arg-type]
        wall = asyncio.run(send(address, images, args.requests, args.in_flight))
        front_s = own_cpu_seconds() - before[0]
        engine_s = cpu_seconds(process.pid) - before[1]  # type: ignore[arg-type]
        process.kill()
    per_image = args.requests * args.images
    size = sum(len(i) for i in images) // len(images)
    print(
        "| transport | images/request | image bytes | requests/s | front µs/image "
        "| engine µs/image |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| {args.transport} | {args.images} | {size:,} | {args.requests / wall:,.0f} | "
        f"{1e6 * front_s / per_image:.1f} | {1e6 * engine_s / per_image:.1f} |"
    )


if __name__ == "__main__":
    main()
