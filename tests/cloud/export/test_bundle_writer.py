"""Bundle writer: manifest contents (docs/export.md), checksums, progress by stage, atomic output,
clear errors, the device runtime's verification, and `dir-cloud export` from a run folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("executorch.runtime", reason="executorch not installed: pip install -e '.[export]'")
pytest.importorskip("litert_torch", reason="litert-torch not installed: pip install -e '.[export]'")

from cloud.export import ExportError, summary, write_bundle
from cloud.export.parity import float16_vectors, max_abs_diff, open_runner, parity_cases
from cloud.models import count_parameters
from cloud.training.runs import embedding_version
from shared_schema import SCHEMA_VERSION, BundleManifest
from shared_schema.manifest import FLOAT16_METRIC, MANIFEST_NAME
from tests.helpers.export import RUN_METRICS, SPEC, quiet, shared_bundle, small_dir

FILES = {  # path: (runtime, delegate, quantization)
    "model.pte": ("executorch", "xnnpack", "fp32"),
    "model_portable.pte": ("executorch", "portable", "fp32"),
    "model.tflite": ("tflite", "any", "fp32"),
    "model_int8.tflite": ("tflite", "any", "int8"),
    "model_int8_dynamic.tflite": ("tflite", "any", "int8-dynamic"),
    "model_int8_dynamic.pte": ("executorch", "xnnpack", "int8-dynamic"),
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def test_manifest_describes_the_bundle(bundle):
    m, model = bundle.manifest, bundle.model
    assert (m.schema_version, m.model_name, m.model_version) == (SCHEMA_VERSION, "dir", "test-1")
    assert m.sources == list(SPEC.sources) and m.target_shares == SPEC.target_shares
    assert (m.vector_dims, m.n, m.t, m.K) == ([8, 7, 12], 4, 3, 2)
    assert m.embedding_version == embedding_version(model)  # the same version load_run reports
    assert m.inputs == model.layout.input_specs(1) and m.outputs == model.layout.output_specs(1)
    assert {f.path: (f.runtime, f.delegate, f.quantization) for f in m.files} == FILES
    assert sorted(p.name for p in bundle.path.iterdir()) == sorted([*FILES, MANIFEST_NAME])


def test_files_have_their_checksum_size_and_parity(bundle):
    for f in bundle.manifest.files:
        data = (bundle.path / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.size == len(data) > 1000
        assert f.parity_max_abs_diff is not None
        assert f.parity_max_abs_diff <= (1e-5 if f.quantization == "fp32" else 1.0)


def test_the_float16_effect_is_measured_and_holds_on_the_device_runtime(bundle):
    effect = bundle.manifest.metrics[FLOAT16_METRIC]
    assert 0 < effect < 1e-2 and FLOAT16_METRIC in bundle.manifest.notes
    layout = bundle.model.layout
    device = open_runner(bundle.path / "model.tflite", layout)
    on_device = max_abs_diff(device, float16_vectors(device, layout), parity_cases(layout), layout)
    assert 0 < on_device <= effect + 2e-5  # the export's parity bound, twice


def test_metrics_carry_the_run_and_the_embedding_split(bundle):
    metrics, counts = bundle.manifest.metrics, count_parameters(bundle.model)
    assert metrics["test.auc"] == 0.71 and metrics["test.ndcg@2"] == 0.5 and metrics["epochs"] == 3
    assert (metrics["params_device"], metrics["params_cloud"]) == (counts["device"], counts["cloud"])
    assert metrics["cloud_param_share"] == pytest.approx(counts["cloud"] / (counts["cloud"] + counts["device"]))
    assert {"embedding_split", "parity", "exporters"} <= set(bundle.manifest.notes)
    assert "executorch 1.4.1" in bundle.manifest.notes["exporters"]


def test_manifest_on_disk_round_trips(bundle):
    on_disk = BundleManifest.model_validate_json((bundle.path / MANIFEST_NAME).read_text())
    assert on_disk == bundle.manifest


def test_progress_is_printed_by_stage_with_seconds(bundle):
    assert len(bundle.progress) == 9
    for i, line in enumerate(bundle.progress, start=1):
        assert re.fullmatch(rf"\[{i}/9\] .+\.\.\. \d+\.\d s", line), line
    assert "lowering to ExecuTorch (XNNPACK)" in bundle.progress[1]


def test_summary_names_files_sizes_and_cloud_share(bundle):
    text = summary(bundle.manifest)
    assert all(name in text for name in FILES) and "KB" in text
    assert f"{bundle.manifest.metrics['cloud_param_share']:.1%} of parameters stay in the cloud" in text


def test_the_device_runtime_verifies_the_bundle(bundle):
    from device_runtime.bundle import verify

    assert verify(bundle.path).model_version == "test-1"


def test_existing_output_is_refused_before_any_work(bundle):
    with pytest.raises(FileExistsError, match="exists"):
        write_bundle(bundle.model, SPEC, bundle.path, progress=quiet)


class _Sorter(nn.Module):
    """A device model that branches on the scores' values: not a fixed-shape graph."""

    def __init__(self):
        super().__init__()
        self.rank = _Branch()

    def forward(self, *inputs):
        return self.rank(torch.stack([x[..., 0].new_zeros(1, 4) + x.sum() for x in inputs[::4]], dim=1))


class _Branch(nn.Module):
    def forward(self, scores):
        return scores.sort(dim=-1).values if scores.max() > 0 else scores


def test_failed_export_leaves_nothing_and_names_the_part(tmp_path):
    model = small_dir()
    model.device_model = _Sorter()
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match=r"part 'rank' \(.*_Branch\).*outside the exported graph"):
        write_bundle(model, SPEC, out, progress=quiet)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backends": "executorch,coreml"}, "backends: unknown"),
        ({"quantize": "int4"}, "quantize: unknown"),
        ({"backends": "executorch", "quantize": "int8"}, "add 'tflite' to backends"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_bundle(small_dir(), SPEC, tmp_path / "b", progress=quiet, **kwargs)


def test_spec_that_does_not_fit_the_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="build the model from the same DatasetSpec"):
        write_bundle(small_dir(), SPEC.model_copy(update={"n": 5}), tmp_path / "b", progress=quiet)


def _run_folder(folder: Path, model) -> Path:
    """A run folder as `dir-cloud train` writes it, holding `model`."""
    folder.mkdir()
    options = {"embedding_dim": 4, "hidden": 8, "mlp_dims": [8, 8]}
    (folder / "config.json").write_text(
        json.dumps({"model": "dir", "model_options": options, "spec": SPEC.model_dump(mode="json")})
    )
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "metrics.json").write_text(json.dumps(RUN_METRICS))
    return folder


def test_cli_exports_a_run_folder(tmp_path, capfd):
    from cloud.cli import main

    model = small_dir(seed=1)
    run = _run_folder(tmp_path / "run", model)
    out = tmp_path / "bundle"
    assert (
        main(["export", "--run", str(run), "--out", str(out), "--backends", "tflite", "--quantize", "int8-dynamic"])
        == 0
    )
    printed = capfd.readouterr().out
    assert re.search(r"\[2/5\] converting to TFLite \(litert-torch\)\.\.\. \d+\.\d s", printed)
    assert "stay in the cloud" in printed and "model_int8_dynamic.tflite" in printed
    manifest = BundleManifest.model_validate_json((out / MANIFEST_NAME).read_text())
    assert [f.path for f in manifest.files] == ["model.tflite", "model_int8_dynamic.tflite"]
    assert manifest.embedding_version == embedding_version(model) and manifest.metrics["test.auc"] == 0.71
    assert main(["export", "--run", str(run), "--out", str(out), "--backends", "tflite"]) == 2
    assert "exists" in capfd.readouterr().err
    assert not (tmp_path / "bundle.export.log").exists()  # nothing was logged: no log left beside


@pytest.mark.slow
def test_cli_export_shows_its_steps_and_nothing_else(tmp_path):
    """Run as a user would: third-party warnings and native log lines land in BUNDLE/export.log."""
    run = _run_folder(tmp_path / "run", small_dir(seed=2))
    command = [sys.executable, "-m", "cloud.cli", "export", "--run", str(run), "--backends", "tflite"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "PYTHONWARNINGS": "default"}
    quiet_run = subprocess.run(
        [*command, "--out", str(tmp_path / "b1")], capture_output=True, text=True, env=env, timeout=600
    )
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert quiet_run.stderr == ""
    lines = quiet_run.stdout.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert len(steps) == 4 and all(re.fullmatch(r"\[\d/4\] .*\.\.\. \d+\.\d s", line) for line in steps), lines
    summary_lines = lines[len(steps) :]
    assert summary_lines[0].startswith("bundle dir ") and summary_lines[-1].startswith("wrote ")
    assert not any("warn" in line.lower() or line.startswith(("W0", "I0", "E0")) for line in lines), lines
    log = (tmp_path / "b1" / "export.log").read_text()
    assert log.strip(), "the exporters said nothing: the test no longer shows that their messages are kept"
    loud = subprocess.run(
        [*command, "--out", str(tmp_path / "b2"), "--verbose"], capture_output=True, text=True, env=env, timeout=600
    )
    assert loud.returncode == 0 and not (tmp_path / "b2" / "export.log").exists()
    assert log.splitlines()[0] in loud.stdout + loud.stderr
