"""Serve slates, item vectors and model bundles over HTTP (FastAPI + uvicorn).

    dir-cloud serve --run RUN --data DATA --bundles BUNDLES --host 127.0.0.1 --port 8000

Endpoints (OpenAPI at /docs and /openapi.json; docs/service.md): GET /health, GET /version,
GET /v1/users, GET /v1/users/{user}/slate, GET /v1/lists/{split}/{row}, POST /v1/vectors,
POST /v1/vectors/buckets,
GET /v1/bundles, GET /v1/bundles/{version}, GET /v1/bundles/{version}/files/{name},
GET /tuf/metadata/{name} and GET /tuf/targets/{path} (the signed repository, with --repo).
"""

from __future__ import annotations

import argparse
import json
import os

_SETTINGS = "DIR_CLOUD_SERVE_SETTINGS"
"""Environment variable through which `--workers N` hands the settings to each worker process."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `dir-cloud train`")
    parser.add_argument("--data", help="prepared data folder (default: the run's)")
    parser.add_argument("--bundles", required=True, help="folder with one exported bundle per subfolder")
    parser.add_argument(
        "--repo",
        default=None,
        help="signed repository (`dir-cloud repo init`) to publish under /tuf/ for devices (default: none)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--affinity-weight",
        type=float,
        default=0.5,
        help="upstream ranker: weight of the user's category affinity vs item popularity",
    )
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest accepted request body")
    parser.add_argument("--max-vector-ids", type=int, default=1000, help="most item ids per POST /v1/vectors")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (requests already run in parallel threads)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes, each with its own copy of the model (default: 1)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="logging level of the service and uvicorn",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    if args.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {args.workers}")
    settings = {
        k: getattr(args, k)
        for k in ("run", "data", "bundles", "affinity_weight", "max_body_bytes", "max_vector_ids", "threads", "repo")
    }
    if args.workers == 1:
        app = build_app(settings, announce=f"http://{args.host}:{args.port}")
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    build_app(settings, announce=f"http://{args.host}:{args.port} ({args.workers} workers)")  # fail early here
    os.environ[_SETTINGS] = json.dumps(settings)
    uvicorn.run(
        "cloud.commands.serve:app_from_environment",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    return 0


def build_app(settings: dict, announce: str | None = None):
    """The service app from `serve`'s settings (run, data, bundles, signed repository, limits, torch threads)."""
    import torch

    from cloud.service import BundleFolder, CloudService, create_app
    from cloud.service.bundles import SignedFiles

    torch.set_num_threads(settings["threads"])
    bundles = BundleFolder(settings["bundles"])  # a missing folder fails before the run is loaded
    signed = SignedFiles(settings["repo"]) if settings["repo"] else None
    service = CloudService.load(
        settings["run"],
        settings["data"],
        affinity_weight=settings["affinity_weight"],
        max_vector_ids=settings["max_vector_ids"],
    )
    if announce:
        info = service.info()
        print(
            f"serving model {info.model_name} (embedding {info.embedding_version}), {len(service.users)} users, "
            f"sources {info.sources}, bundles from {settings['bundles']} on {announce}",
            flush=True,
        )
    return create_app(service, bundles, max_body_bytes=settings["max_body_bytes"], signed=signed)


def app_from_environment():
    """uvicorn's app factory in each worker process of `--workers N`."""
    return build_app(json.loads(os.environ[_SETTINGS]))
