"""The load generator of benchmarks/service_load.py on loopback: keep-alive requests to a real service all
succeed and parse, and a peer that answers anything else is counted as errors, never as requests served."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.service import http_answer, raw_server

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "service_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("service_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_load"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["service_load"]


@pytest.mark.parametrize("encoding", ["json", "compact"])
def test_every_request_answered_checked_and_timed(bench, served, encoding):
    service, url = served
    run = bench.load(url, service.users, 60, 4, 30, encoding, server_pid=os.getpid(), keep_every=7)
    bench.validate(run, encoding)
    assert [r.error for r in run.results if not r.ok] == []
    assert len(run.results) == 60 and len(run.kept) == 4 * bench.WARMUP_PER_CONNECTION + 9
    assert all(b"app;dur=" in r.timing for r in run.results)
    assert run.client_cpu > 0 and run.server_total > 0  # the server runs in this process here
    rows = [bench.Row(1, bench.Server("this", bench.REPO), encoding, run, 0.0)]
    assert "| 0 |" in bench.summary(rows)
    assert f"| this | 1 | {encoding} | 1 | {60 / run.wall:,.0f} | - |" in bench.medians(rows)


def test_wrong_answers_are_errors(bench, served):
    service, _ = served
    with raw_server(http_answer(b'{"detail": "busy"}', "503 Service Unavailable")) as url:
        run = bench.load(url, service.users, 10, 2, 30, "json")
    assert len(run.results) == 10 and not any(r.ok for r in run.results)
    assert {r.error.split(":")[0] for r in run.results} == {"status 503"}
    with raw_server(http_answer(b'{"schema_version":1,"sources":[]}')) as url:  # 200, but no vectors
        run = bench.load(url, service.users, 10, 2, 30, "json")
    assert {r.error.split(":")[0] for r in run.results} == {"not a slate with json vectors"}
    bench.validate(run, "json")  # the kept warm-up bodies are not slates either
    assert any(r.error.startswith("invalid slate") for r in run.results)
