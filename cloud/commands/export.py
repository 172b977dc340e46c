"""Export a trained run's device model into a model bundle (ExecuTorch .pte + TFLite .tflite + manifest.json).

    dir-cloud export --run RUN --out BUNDLE
    dir-cloud export --run RUN --out BUNDLE --backends tflite --quantize int8,int8-dynamic

Only the device model is exported (the item encoder's embedding tables stay in the cloud). Each file is
checked against eager PyTorch with its real runtime; the manifest records sha256, size, parity error,
the run's metrics and the cloud's parameter share. See docs/export.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `dir-cloud train`")
    parser.add_argument("--out", required=True, help="bundle folder to create")
    parser.add_argument("--backends", default="executorch,tflite",
                        help="comma-separated: executorch (model.pte, model_portable.pte), tflite (model.tflite)")
    parser.add_argument("--quantize", default="",
                        help="comma-separated int8 variants: int8 (full int8, NPUs), int8-dynamic (int8 weights)")
    parser.add_argument("--model-version", default=None, help="version string (default: hash of the device weights)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--repo", default=None, help="also sign the bundle into this repository (`dir-cloud repo add`)")
    parser.add_argument("--keys", default=None, help="with --repo: folder with targets/snapshot/timestamp keys")


def run(args: argparse.Namespace) -> int:
    from cloud.export import summary, write_bundle
    from cloud.runs import load_run

    if bool(args.repo) != bool(args.keys):
        raise ValueError("--repo and --keys go together: the repository and its online keys")
    loaded = load_run(args.run)
    manifest = write_bundle(
        loaded.model, loaded.spec, args.out, backends=args.backends, quantize=args.quantize or None,
        embedding_version=loaded.embedding_version, model_version=args.model_version,
        metrics=loaded.metrics, overwrite=args.force,
    )
    print(summary(manifest))
    print(f"wrote {args.out}")
    if args.repo:
        from cloud.signing import SignedRepository

        print(f"signed {SignedRepository(args.repo).add_bundle(args.out, args.keys)} into {args.repo}")
    return 0
