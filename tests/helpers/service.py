"""Shared pieces of the service and client tests: a tiny trained run, bundle folders, loopback servers.

from tests.helpers.service import tiny_run, served_bundle, bundle_copy, serve_in_thread, raw_server
run_dir, data_dir = tiny_run(tmp)                        # conftest's tiny logs, prepared, DIR 1 epoch
served_bundle(bundles / "b1", spec, created_at="2030-01-01T00:00:00+00:00")   # for serving only
bundle_copy(device_bundle, bundles / "b2", created_at="2030-02-01T00:00:00+00:00")   # a real model
with serve_in_thread(app) as url: ...                   # real uvicorn on a free loopback port
with raw_server(lambda conn: conn.sendall(b"junk")) as url: ...   # a peer that answers garbage
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared_schema import BundleFile, BundleManifest, DatasetSpec, TensorLayout
from shared_schema.manifest import MANIFEST_NAME
from tests.helpers.device import copy_bundle
from tests.helpers.logs import write_logs

SMALL_DIR = {"embedding_dim": 4, "hidden": 8, "mlp_dims": [8, 8]}


def tiny_run(folder: Path) -> tuple[Path, Path]:
    """conftest's tiny LOGS prepared into folder/data and a small DIR trained 1 epoch into folder/run."""
    from cloud.data.prepare import prepare
    from cloud.training.config import TrainConfig
    from cloud.training.trainer import train

    prepare(write_logs(folder / "logs"), folder / "data")
    train(TrainConfig(epochs=1, batch_size=4, model_options=SMALL_DIR), folder / "data", folder / "run", progress=False)
    return folder / "run", folder / "data"


def served_bundle(
    out: Path,
    spec: DatasetSpec,
    created_at: str,
    model_version: str = "v1",
    files: tuple[str, ...] = ("model.pte", "model.tflite"),
) -> Path:
    """A bundle folder with a valid manifest for `spec` and random bytes as model files: enough to test
    listing and downloads (the service never loads models), not to run on a device."""
    out.mkdir(parents=True)
    entries = []
    for name in files:
        data = os.urandom(5000)
        (out / name).write_bytes(data)
        entries.append(
            BundleFile(
                path=name,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                runtime="tflite" if name.endswith(".tflite") else "executorch",
            )
        )
    layout = TensorLayout(vector_dims=tuple(range(3, 3 + spec.m)), n=spec.n, t=spec.t)
    manifest = BundleManifest(
        model_name="dir",
        model_version=model_version,
        created_at=created_at,
        sources=list(spec.sources),
        vector_dims=list(layout.vector_dims),
        n=spec.n,
        t=spec.t,
        K=spec.K,
        target_shares=spec.target_shares,
        embedding_version="e1",
        inputs=layout.input_specs(1),
        outputs=layout.output_specs(1),
        files=entries,
    )
    (out / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return out


def bundle_copy(bundle: Path, out: Path, **manifest_changes) -> Path:
    """A copy of an exported bundle (manifest fields rewritten, e.g. created_at=...)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return copy_bundle(bundle, out, **manifest_changes)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run `app` with uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback TCP peer: every connection's request is read, then `answer(conn)` writes anything."""
    sock = free_socket()
    sock.listen()
    sock.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    answer(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def http_answer(body: bytes, status: str = "200 OK", content_type: str = "application/json") -> Callable:
    """An `answer` for raw_server that sends one well-formed HTTP response with `body`."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return lambda conn: conn.sendall(head + body)
