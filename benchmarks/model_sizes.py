"""Parameter counts and exported file sizes of every registered model on a prepared dataset's spec.

    python benchmarks/model_sizes.py --data DATA                  # every model of the results tables
    python benchmarks/model_sizes.py --data DATA --models dir,mir

Each model is built with its defaults on the spec of DATA (`dir-cloud prepare` output) and exported with
`cloud.export.write_bundle` (ExecuTorch XNNPACK and portable .pte, TFLite .tflite, fp32, every file
checked against eager PyTorch). Sizes do not depend on the weights' values, so untrained models are used.
Prints a markdown table: device parameters (exported), cloud parameters (embedding tables, not
exported) and each file's size in KB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

MODELS = "dir,din,setrank,prm,mir,pear,edgerec,svr,nar4rec,crum,hrl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="prepared data folder (its spec sizes the models)")
    parser.add_argument("--models", default=MODELS, help="comma-separated registry names (default: %(default)s)")
    args = parser.parse_args()

    import torch

    from cloud.data.prepared import PreparedData
    from cloud.export import write_bundle
    from cloud.models import build_model, count_parameters

    torch.set_num_threads(1)
    spec = PreparedData(args.data).spec
    print(f"# model sizes on {spec.name}: m={spec.m} n={spec.n} t={spec.t}, fp32\n")
    print("| model | device params | cloud params | model.pte (XNNPACK) KB | model_portable.pte KB | model.tflite KB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name, spec).eval()
        params = count_parameters(model)
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            manifest = write_bundle(model, spec, Path(tmp) / "bundle", progress=lambda *a, **k: None)
        sizes = {f.path: f.size / 1024 for f in manifest.files}
        cells = [
            f"{sizes.get(path, float('nan')):,.1f}" for path in ("model.pte", "model_portable.pte", "model.tflite")
        ]
        print(f"| {name} | {params['device']:,} | {params['cloud']:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
