"""Test-set quality and speed of a bundle's int8 files, and of float16 item vectors, against fp32, measured with
the real runtimes.

    python benchmarks/int8_quality.py                  # synth (seed 0) -> prepare -> train -> export -> score
    python benchmarks/int8_quality.py --work /tmp/q8   # keep logs/, data/, run/, bundle/ there; reruns reuse them
    python benchmarks/int8_quality.py --epochs 8 --calibration 256 --target 0.002

Steps (each skipped when its output already exists in --work): `dir-cloud synth --out WORK/logs --seed 0`,
`dir-cloud prepare`, cloud.training.trainer.train(TrainConfig(epochs, threads=1)) -> WORK/run, write_bundle with
quantize int8 + int8-dynamic -> WORK/bundle, full int8 calibrated on `--calibration` real training lists
(padded as they come). Then every test list goes through every file of the bundle with its real runtime
(cloud.export.open_runner: one batch-1 request per list, XNNPACK for .tflite, one thread). The table gives
per file AUC and NDCG@K over all test lists and their change against the fp32 file of the same runtime
(fp32 files: against eager PyTorch), and p50 ms per list through open_runner (numpy in and out, int8 I/O
(de)quantized in numpy; benchmarks/inference_latency.py times the runtime call alone). The last row feeds
model.tflite the item vectors rounded to float16, as the float16 wire form delivers them (against
model.tflite with float32 vectors), and counts the test lists whose top-K by score changes. Delete
WORK/bundle to export afresh.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

FP32_OF = {".pte": "model.pte", ".tflite": "model.tflite"}


def prepare_data(work: Path, seed: int) -> Path:
    """WORK/logs (synthetic, default size) and WORK/data, made with the dir-cloud commands."""
    from cloud.cli import main as dir_cloud

    logs, data = work / "logs", work / "data"
    steps = [
        (logs / "dataset.toml", ["synth", "--out", str(logs), "--seed", str(seed), "--force"]),
        (data / "dataset.json", ["prepare", "--logs", str(logs), "--out", str(data), "--force"]),
    ]
    for done, argv in steps:
        if not done.exists() and dir_cloud(argv):
            raise SystemExit(f"dir-cloud {argv[0]} failed")
    return data


def train_run(data: Path, work: Path, epochs: int) -> Path:
    from cloud.training.config import TrainConfig
    from cloud.training.trainer import train

    run = work / "run"
    if not (run / "metrics.json").exists():
        start = time.perf_counter()
        train(TrainConfig(epochs=epochs, threads=1), data, run, progress=False)
        print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s")
    return run


def batcher(data: Path, split: str):
    from cloud.data.batches import ListBatcher
    from cloud.data.prepared import PreparedData

    prepared = PreparedData(data)
    return ListBatcher(prepared.item_tables(), prepared.split(split), "device")


def requests(model, lists, count: int | None = None, batch_size: int = 512) -> list[dict[str, np.ndarray]]:
    """Batch-1 device requests (layout dicts) of the first `count` lists of a split, in order."""
    import torch

    from cloud.export import as_requests

    total = len(lists.cand_item) if count is None else min(count, len(lists.cand_item))
    samples = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            batch = lists.batch(np.arange(start, min(start + batch_size, total)))
            samples.append(model.device_inputs(batch))
    return as_requests(samples, model.layout)


def export(run_model, spec, bundle: Path, calibration) -> None:
    from cloud.export import summary, write_bundle

    if not (bundle / "manifest.json").exists():
        manifest = write_bundle(
            run_model,
            spec,
            bundle,
            quantize=("int8", "int8-dynamic"),
            calibration_inputs=calibration,
            model_version="int8-quality",
            overwrite=True,
        )
        print(summary(manifest))


def score_file(path: Path, layout, test_requests) -> tuple[np.ndarray, float]:
    """Scores [L, m, n] of every request through the file, and the p50 ms per call."""
    from cloud.export import open_runner

    run = open_runner(path, layout, xnnpack=True, threads=1)
    scores, times = [], []
    for request in test_requests:
        start = time.perf_counter()
        scores.append(run(request)[0])
        times.append(time.perf_counter() - start)
    return np.stack(scores), statistics.median(times) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for logs/data/run/bundle (default: a new temp folder)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--calibration", type=int, default=256, help="training lists to calibrate full int8 on")
    parser.add_argument("--target", type=float, default=0.002, help="allowed AUC drop vs fp32 (default %(default)s)")
    args = parser.parse_args(argv)

    import torch
    from executorch.extension.pybindings import portable_lib

    from cloud.evaluation.scoring import evaluate_scores, predict
    from cloud.training.runs import load_run
    from shared_schema.manifest import FLOAT16_METRIC, MANIFEST_NAME, BundleManifest

    torch.set_num_threads(1)
    portable_lib._unsafe_reset_threadpool(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="int8-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(work, args.seed)
    loaded = load_run(train_run(data, work, args.epochs))
    model, spec = loaded.model, loaded.spec
    shares, K = loaded.config.get("target_shares") or spec.target_shares, loaded.config.get("K") or spec.K
    export(model, spec, work / "bundle", requests(model, batcher(data, "train"), args.calibration))
    manifest = BundleManifest.model_validate_json((work / "bundle" / MANIFEST_NAME).read_text())
    layout = manifest.layout()
    test = batcher(data, "test")
    test_requests = requests(model, test)
    print(
        f"\nDIR trained {args.epochs} epochs on synthetic seed {args.seed} ({work}); {len(test_requests)} test "
        f"lists, m={layout.m} n={layout.n} t={layout.t}; full int8 calibrated on {args.calibration} training lists"
    )
    rows = [("eager PyTorch", "fp32", evaluate_scores(predict(model, test), test, shares, K), None)]
    for f in manifest.files:
        scores, p50 = score_file(work / "bundle" / f.path, layout, test_requests)
        rows.append((f.path, f.quantization, evaluate_scores(scores, test, shares, K), p50))
        if f.path == "model.tflite":
            fp32_scores = scores
    half_requests = [{k: _float16(k, a) for k, a in request.items()} for request in test_requests]
    half, p50 = score_file(work / "bundle" / "model.tflite", layout, half_requests)
    rows.append(("model.tflite", "float16 vectors", evaluate_scores(half, test, shares, K), p50))
    metrics = {name: m for name, quantization, m, _ in rows if quantization == "fp32"}
    ndcg = f"ndcg@{K}"
    print(
        f"{'file':<28}{'quantization':<17}{'AUC':>8}{'dAUC':>9}{ndcg.upper():>9}{'dNDCG':>9}{'p50 ms':>9}  "
        f"dAUC target -{args.target:g}"
    )
    for name, quantization, m, p50 in rows:
        base = metrics["eager PyTorch"] if quantization == "fp32" else metrics[FP32_OF[Path(name).suffix]]
        d_auc, d_ndcg = m["auc"] - base["auc"], m[ndcg] - base[ndcg]
        verdict = "" if quantization == "fp32" else ("ok" if -d_auc <= args.target else "MISSES")
        speed = "-" if p50 is None else f"{p50:.4f}"
        print(
            f"{name:<28}{quantization:<17}{m['auc']:>8.4f}{d_auc:>+9.4f}{m[ndcg]:>9.4f}{d_ndcg:>+9.4f}"
            f"{speed:>9}  {verdict}"
        )
    masks = test.batch(np.arange(len(test_requests)))
    real = np.concatenate([masks[f"cand_mask_{s}"].numpy() for s in range(layout.m)], axis=1) > 0
    changed = sum(_top(a, r, K) != _top(b, r, K) for a, b, r in zip(fp32_scores, half, real, strict=True))
    largest = float(np.abs(fp32_scores - half).reshape(len(real), -1)[real].max())
    print(
        f"float16 vectors: {changed} of {len(real)} test lists change their top-{K} by score; largest score change "
        f"{largest:.2e} (the manifest's {FLOAT16_METRIC}: {manifest.metrics.get(FLOAT16_METRIC, float('nan')):.2e})"
    )
    return 0


def _float16(name: str, array: np.ndarray) -> np.ndarray:
    """An item-vector input rounded to float16 (what the float16 wire form delivers); masks as they are."""
    return array if "mask" in name else array.astype(np.float16).astype(np.float32)


def _top(scores: np.ndarray, real: np.ndarray, k: int) -> list[int]:
    """The flat slots of the k highest scores among the real candidates, best first."""
    flat = np.where(real, scores.reshape(-1), -np.inf)
    return [int(i) for i in np.argsort(-flat, kind="stable")[:k]]


if __name__ == "__main__":
    raise SystemExit(main())
