"""Export a trained run's device model into a model bundle (ExecuTorch .pte + TFLite .tflite + manifest.json).

    dir-cloud export --run RUN --out BUNDLE
    dir-cloud export --run RUN --out BUNDLE --backends tflite --quantize int8,int8-dynamic

Only the device model is exported (the item encoder's embedding tables stay in the cloud). Each file is
checked against eager PyTorch with its real runtime; the manifest records sha256, size, parity error,
the run's metrics and the cloud's parameter share. See docs/export.md.

The terminal shows the export's steps and its summary only: the exporters' own warnings and log lines
(Python warnings, absl, cpuinfo, ...) go to BUNDLE/export.log (beside BUNDLE as BUNDLE.export.log when
the export fails); --verbose shows them as they come instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

LOG_NAME = "export.log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `dir-cloud train`")
    parser.add_argument("--out", required=True, help="bundle folder to create")
    parser.add_argument(
        "--backends",
        default="executorch,tflite",
        help="comma-separated: executorch (model.pte, model_portable.pte), tflite (model.tflite)",
    )
    parser.add_argument(
        "--quantize",
        default="",
        help="comma-separated int8 variants: int8 (full int8, NPUs), int8-dynamic (int8 weights) (default: none)",
    )
    parser.add_argument("--model-version", default=None, help="version string (default: hash of the device weights)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--repo",
        default=None,
        help="also sign the bundle into this repository (`dir-cloud repo add`; default: not signed)",
    )
    parser.add_argument(
        "--keys", default=None, help="with --repo: folder with targets/snapshot/timestamp keys (default: none)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show the exporters' warnings and log lines instead of writing them to BUNDLE/{LOG_NAME}",
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    pending = out.parent / f"{out.name}.{LOG_NAME}"
    console = sys.stdout, sys.stderr
    with contextlib.ExitStack() as stack:
        if not args.verbose:
            console = stack.enter_context(_output_to(pending))
        progress = functools.partial(print, file=console[1] if args.json else console[0], flush=True)
        try:
            manifest = _export(args, progress)
        except BaseException:
            if not args.verbose:
                stack.close()
                if pending.stat().st_size:
                    print(f"(the exporters' messages: {pending})", file=sys.stderr, flush=True)
                else:
                    pending.unlink()
            raise
    if not args.verbose:
        pending.replace(out / LOG_NAME)
    if args.json:
        print(json.dumps({"bundle": str(out), **manifest.model_dump(mode="json")}, indent=2))
    else:
        from cloud.export import summary

        print(summary(manifest))
        print(f"wrote {out}" + ("" if args.verbose else f" (exporters' messages in {out / LOG_NAME})"))
    return 0


def _export(args: argparse.Namespace, progress):
    import warnings

    from cloud.export import write_bundle
    from cloud.training.runs import load_run

    if bool(args.repo) != bool(args.keys):
        raise ValueError("--repo and --keys go together: the repository and its online keys")
    warnings.simplefilter("default")  # every third-party warning is recorded once in the log
    loaded = load_run(args.run)
    manifest = write_bundle(
        loaded.model,
        loaded.spec,
        args.out,
        backends=args.backends,
        quantize=args.quantize or None,
        embedding_version=loaded.embedding_version,
        model_version=args.model_version,
        metrics=loaded.metrics,
        overwrite=args.force,
        progress=progress,
    )
    if args.repo:
        from cloud.export.signing import SignedRepository

        progress(f"signed {SignedRepository(args.repo).add_bundle(args.out, args.keys)} into {args.repo}")
    return manifest


@contextlib.contextmanager
def _output_to(path: Path):
    """Send file descriptors 1 and 2 (Python's and native libraries' output) to `path`; yield the terminal's
    (stdout, stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1), os.fdopen(os.dup(2), "w", buffering=1)
    with open(path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for stream in console:
                stream.close()
