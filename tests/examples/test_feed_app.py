"""The demo feed app (examples/feed_app) end to end: a real bundle trained and exported here, real TFLite,
real SQLite, real HTTP, and Debian's headless Chromium driven by Selenium (chromium-driver).

Screenshots go to artifacts/feed_app/. Without /usr/bin/chromium the browser tests fail when CI is set
(CI installs it) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device_runtime.backends import load_backend
from device_runtime.bundle import verify
from device_runtime.store import HistoryStore
from examples.feed_app.__main__ import main as feed_main
from examples.feed_app.feed import FeedApp
from examples.feed_app.slates import CloudSlates, PoolSlates, read_catalog, read_slate
from tests.helpers.browser import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "feed_app"


@pytest.fixture(scope="module")
def feed_env(tmp_path_factory):
    """Synthetic logs (40 users) -> prepared -> DIR trained 1 epoch -> TFLite bundle -> one user's slate pool."""
    from cloud.data.prepare import prepare
    from cloud.data.synth import SynthConfig, generate, write_logs
    from cloud.export import write_bundle
    from cloud.training.config import TrainConfig
    from cloud.training.runs import load_run
    from cloud.training.trainer import train
    from examples.feed_app.build_pool import build_pool

    root = tmp_path_factory.mktemp("feed")
    write_logs(generate(SynthConfig(seed=3, users=40, requests_per_user=10, lists_per_user=6, warmup=2)), root / "logs")
    prepare(root / "logs", root / "data")
    train(TrainConfig(epochs=1, threads=1), root / "data", root / "run", progress=False)
    run = load_run(root / "run")
    write_bundle(
        run.model,
        run.spec,
        root / "bundle",
        backends=("tflite",),
        embedding_version=run.embedding_version,
        model_version="feed-1",
        progress=lambda *a, **k: None,
    )
    summary = build_pool(root / "run", root / "pool")
    from cloud.export.signing import SignedRepository, create_keys

    create_keys(root / "keys")
    repo = SignedRepository.init(root / "repo", root / "keys" / "root.pem", root / "keys")
    repo.add_bundle(root / "bundle", root / "keys", version="feed-1")
    return SimpleNamespace(
        root=root,
        run=root / "run",
        data=root / "data",
        bundle=root / "bundle",
        repo=root / "repo",
        trust=root / "repo" / "metadata" / "1.root.json",
        pool=root / "pool",
        user=summary["user"],
        pool_summary=summary,
        manifest=verify(root / "bundle"),
    )


# -- the browser ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def body(driver, attribute: str) -> str:
    return driver.find_element("tag name", "body").get_attribute(attribute)


def cards(driver, selector: str = "#slots .card, #more .card") -> list[dict]:
    return [
        {
            "item_id": c.get_attribute("data-item-id"),
            "source": c.get_attribute("data-source"),
            "score": float(c.get_attribute("data-score")) if c.get_attribute("data-score") else None,
            "element": c,
        }
        for c in driver.find_elements("css selector", selector)
    ]


def notice(driver, kind: str) -> str:
    found = driver.find_elements("css selector", f'#notices [data-kind="{kind}"]')
    return found[0].text if found else ""


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


# -- the app as a user starts it --------------------------------------------------------------------
@contextmanager
def feed_process(*args: str, python: tuple[str, ...] = ("-m", "examples.feed_app")):
    """The app as a user starts it, on a free port: yields (process, page URL); stops it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, *python, "--port", "0", "--quiet", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("feed app on "):
                break
        else:
            raise AssertionError(f"the feed app exited ({proc.wait()}) before serving:\n{''.join(lines)}")
        yield proc, line.split()[3]
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=10)


def offline_args(env, home: Path) -> list[str]:
    return ["--slates", str(env.pool), "--bundle", str(env.bundle), "--home", str(home), "--trust", str(env.trust)]


def get_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def clicks_in_store(db: Path) -> list[tuple[str, str]]:
    with HistoryStore(db) as store:
        return [
            tuple(r)
            for r in store.db.conn.execute("SELECT source, item_id FROM behaviors WHERE action = 'click' ORDER BY id")
        ]


def model_scores(
    env, db: Path, slate, drop: tuple[str, str] | None = None, forget: tuple[str, str] | None = None
) -> dict[str, float]:
    """The bundle's scores, by a fresh CPU backend, for `slate` without the candidate `drop`, with the
    store's newest clicks without the click `forget` ((source, item_id) pairs)."""
    m = env.manifest
    with HistoryStore(db) as store:
        stored = store.last_clicks(m.source_names, m.t + 1)
    histories = [
        np.array([v for item, v in clicks if (source, item) != forget][: m.t], np.float32).reshape(-1, d)
        for source, clicks, d in zip(m.source_names, stored, m.vector_dims)
    ]
    entries = {e.source: [i for i in e.items if (e.source, i.item_id) != drop] for e in slate.sources}
    candidates = [
        np.array([i.vector for i in entries.get(s, [])], np.float32).reshape(-1, d)
        for s, d in zip(m.source_names, m.vector_dims)
    ]
    scores = load_backend(env.bundle, m, "tflite", "cpu").run(m.layout().assemble(candidates, histories))[0]
    return {
        item.item_id: float(scores[s, i])
        for s, name in enumerate(m.source_names)
        for i, item in enumerate(entries.get(name, []))
    }


def test_click_is_stored_and_the_next_page_is_reranked_with_it(feed_env, browser, tmp_path):
    home = tmp_path / "home"
    with feed_process(*offline_args(feed_env, home)) as (proc, url):
        browser.get(url)
        wait_for(browser, lambda d: body(d, "data-state") == "ready" and cards(d), "the first page")
        assert browser.find_element("id", "mode").text == "offline"
        assert browser.find_element("id", "runtime").text.startswith("tflite · ")
        assert len(browser.find_elements("css selector", "#timings tr")) == 6  # every rerank stage, in ms
        exposure = browser.find_elements("css selector", "#exposure .exposure")
        assert [e.get_attribute("data-source") for e in exposure] == feed_env.manifest.source_names
        first = cards(browser)
        slots = cards(browser, "#slots .card")
        assert len(slots) == feed_env.manifest.K and all(c["score"] is not None for c in first)
        catalog = read_catalog(feed_env.pool)
        for c in first:  # a readable title and a short description, not the raw id
            title = c["element"].find_element("css selector", ".title").text
            description = c["element"].find_element("css selector", ".description").text
            assert (title, description) == catalog[c["source"], c["item_id"]] and title != c["item_id"]
            assert title.endswith(f"{c['source']} #{''.join(ch for ch in c['item_id'] if ch.isdigit())}")
        screenshot(browser, "feed_page.png")

        db = home / "history.db"
        before = clicks_in_store(db)
        clicked = slots[0]
        page = int(body(browser, "data-page"))
        clicked["element"].click()
        wait_for(
            browser,
            lambda d: int(body(d, "data-page")) > page and body(d, "data-state") == "ready",
            "the page after the click",
        )
        after = clicks_in_store(db)
        assert after == before + [(clicked["source"], clicked["item_id"])]
        shown = browser.find_element("css selector", f'#history [data-source="{clicked["source"]}"]')
        assert int(shown.get_attribute("data-clicks")) == sum(s == clicked["source"] for s, _ in after)
        assert "Saved your click" in notice(browser, "saved")
        second = cards(browser)
        screenshot(browser, "feed_after_click.png")
        shown_page = int(body(browser, "data-page"))
        with HistoryStore(db) as store:
            exposures = store.exposure_counts(feed_env.manifest.source_names).tolist()
        for _ in range(2):  # the browser GETs the API: the last page comes back, nothing is reranked or recorded
            browser.get(f"{url}api/page")
            answer = json.loads(browser.find_element("tag name", "body").text)
            assert answer["page"] == shown_page and [c["item_id"] for c in answer["cards"]] == [
                c["item_id"] for c in second
            ]
        with HistoryStore(db) as store:
            assert store.exposure_counts(feed_env.manifest.source_names).tolist() == exposures
        assert proc.poll() is None

    # The next page is the same slate without the clicked item, scored by the model with the click in
    # the history: equal to a fresh backend fed those candidates and the store's newest clicks. The same
    # backend without that one click in the history gives other scores (DIR attends over the history),
    # and with the full slate it reproduces the first page.
    key = (clicked["source"], clicked["item_id"])
    slate = read_slate(feed_env.pool / "000" / "slate.json")
    assert {c["item_id"] for c in second} == {c["item_id"] for c in first} - {clicked["item_id"]}
    expected = model_scores(feed_env, db, slate, drop=key)
    assert [c["score"] for c in second] == pytest.approx([expected[c["item_id"]] for c in second], abs=1e-5)
    first_page = model_scores(feed_env, db, slate, forget=key)
    assert [c["score"] for c in first] == pytest.approx([first_page[c["item_id"]] for c in first], abs=1e-5)
    no_click = model_scores(feed_env, db, slate, drop=key, forget=key)
    moved = max(abs(c["score"] - no_click[c["item_id"]]) for c in second)
    assert moved > 1e-4, f"the stored click did not change any score (largest change {moved:.2g})"


def test_unreachable_server_falls_back_to_the_offline_pool_in_the_page(feed_env, browser, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    with feed_process(*offline_args(feed_env, tmp_path / "home"), "--server", server) as (proc, url):
        browser.get(url)
        wait_for(browser, lambda d: body(d, "data-state") == "ready" and cards(d), "the fallback page")
        assert browser.find_element("id", "mode").text == "fallback"
        text = notice(browser, "cloud")
        assert f"{server}/" in text and "unavailable" in text and str(feed_env.pool) in text
        assert all(c["score"] is not None for c in cards(browser))  # offline slates, reranked on the device
        screenshot(browser, "feed_fallback.png")
        assert proc.poll() is None


@contextmanager
def tiny_filesystem(path: Path, size: str = "1m"):
    """A `size` tmpfs mounted at `path` (root only): a disk that really fills up."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        reason = f"the full-disk test mounts a {size} tmpfs and mount refused ({mounted.stderr.strip()}); run as root"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert "No space left" in str(exc)


def test_full_disk_shows_a_message_keeps_serving_and_recovers(feed_env, browser, tmp_path):
    with (
        tiny_filesystem(tmp_path / "small") as small,
        feed_process(*offline_args(feed_env, tmp_path / "home"), "--db", str(small / "history.db")) as (proc, url),
    ):
        browser.get(url)
        wait_for(browser, lambda d: body(d, "data-state") == "ready" and cards(d), "the first page")
        target = cards(browser, "#slots .card")[0]
        fill(small / "filler")
        page = int(body(browser, "data-page"))
        target["element"].click()
        wait_for(browser, lambda d: int(body(d, "data-page")) > page, "the page after the failed click")
        assert "was not saved" in notice(browser, "click") and "database or disk is full" in notice(browser, "click")
        assert "free some space" in notice(browser, "store")
        assert all(c["score"] is None for c in cards(browser))  # shown in the cloud's order meanwhile
        screenshot(browser, "feed_disk_full.png")
        assert proc.poll() is None

        (small / "filler").unlink()
        page = int(body(browser, "data-page"))
        again = next(c for c in cards(browser) if c["item_id"] == target["item_id"])
        again["element"].click()
        wait_for(browser, lambda d: int(body(d, "data-page")) > page, "the page after the second click")
        assert "Saved your click" in notice(browser, "saved") and not notice(browser, "store")
        assert clicks_in_store(small / "history.db")[-1] == (target["source"], target["item_id"])


def test_the_running_app_never_imports_torch(feed_env, tmp_path):
    report = (
        "import atexit, runpy, sys; atexit.register(lambda: print('heavy modules:', sorted("
        "{m.split('.')[0] for m in sys.modules} & {'torch', 'cloud', 'executorch'}), flush=True)); "
        "runpy.run_module('examples.feed_app', run_name='__main__')"
    )
    with feed_process(*offline_args(feed_env, tmp_path / "home"), python=("-c", report)) as (proc, url):
        page = get_json(f"{url}api/page", {})
        card = page["cards"][0]
        assert get_json(f"{url}api/click", {"item_id": card["item_id"], "source": card["source"]})["recorded"]
        assert card["item_id"] not in [c["item_id"] for c in get_json(f"{url}api/page", {})["cards"]]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "heavy modules: []" in out, out


def test_get_has_no_side_effects_and_post_advances(feed_env, tmp_path):
    home = tmp_path / "home"
    db = home / "history.db"
    with feed_process(*offline_args(feed_env, home)) as (proc, url):
        with pytest.raises(urllib.error.HTTPError) as before:
            get_json(f"{url}api/page")
        assert before.value.code == 404  # nothing shown yet, and GET does not rerank to find out
        with HistoryStore(db) as store:
            assert int(store.exposure_counts(feed_env.manifest.source_names).sum()) == 0
        first = get_json(f"{url}api/page", {})
        with HistoryStore(db) as store:
            shown = store.exposure_counts(feed_env.manifest.source_names).tolist()
        assert sum(shown) == feed_env.manifest.K  # the POST recorded the top K exposures
        reads = [get_json(f"{url}api/page") for _ in range(3)]
        assert all(read == first for read in reads)  # same page, same number, same timings
        with HistoryStore(db) as store:
            assert store.exposure_counts(feed_env.manifest.source_names).tolist() == shown
        with pytest.raises(urllib.error.HTTPError) as old_style:
            get_json(f"{url}api/page?advance=1")
        assert old_style.value.code == 405 and "POST /api/page" in json.load(old_style.value)["error"]
        assert get_json(f"{url}api/page") == first  # the refused GET moved nothing
        advanced = get_json(f"{url}api/page", {"advance": True})
        assert advanced["page"] == first["page"] + 1 and advanced["request_id"] != first["request_id"]
        with pytest.raises(urllib.error.HTTPError) as bad:
            get_json(f"{url}api/page", {"advance": "yes"})
        assert bad.value.code == 400
        assert proc.poll() is None


def test_online_mode_installs_the_cloud_bundle_then_falls_back_when_the_server_goes(feed_env, tmp_path):
    from cloud.service import BundleFolder, CloudService, create_app
    from device_runtime.client import CloudClient
    from tests.helpers.service import serve_in_thread

    shutil.copytree(feed_env.bundle, tmp_path / "bundles" / "feed-1")
    from cloud.service.bundles import SignedFiles

    service = create_app(
        CloudService.load(feed_env.run, feed_env.data),
        BundleFolder(tmp_path / "bundles"),
        signed=SignedFiles(feed_env.repo),
    )
    with serve_in_thread(service) as server:
        source = CloudSlates(CloudClient(server), feed_env.user, fallback=PoolSlates(feed_env.pool), retry_s=0)
        app = FeedApp(tmp_path / "home", source, trust=feed_env.trust)  # no bundle: the cloud's signed one
        page = app.page()
        assert (page["mode"], page["origin"], page["notices"]) == ("online", f"cloud {server}", [])
        assert page["reranked"] and page["bundle"].startswith("feed-1-") and page["user_id"] == feed_env.user
        card = page["cards"][0]
        assert app.click(card["item_id"], card["source"]) == {"recorded": True, "error": None}
        assert card["item_id"] not in [c["item_id"] for c in app.page()["cards"]]
    page = app.page(advance=True)
    assert page["mode"] == "fallback" and page["origin"].startswith("offline pool ") and page["reranked"]
    assert [n["kind"] for n in page["notices"]] == ["cloud"]
    app.close()


def test_a_refused_bundle_leaves_the_last_good_one_serving(feed_env, tmp_path):
    home, pool = tmp_path / "home", PoolSlates(feed_env.pool)
    app = FeedApp(home, pool, bundle=feed_env.bundle, trust=feed_env.trust)
    good = app.page()["bundle"]
    app.close()
    corrupt = shutil.copytree(feed_env.bundle, tmp_path / "corrupt")
    model = bytearray((corrupt / "model.tflite").read_bytes())
    model[len(model) // 2] ^= 0xFF
    (corrupt / "model.tflite").write_bytes(model)
    for bundle, why in (
        (corrupt, "does not match its signed length and sha256"),
        (tmp_path / "missing", "no such bundle"),
    ):
        app = FeedApp(home, pool, bundle=bundle, trust=feed_env.trust)
        page = app.page()
        text = " ".join(n["text"] for n in page["notices"])
        assert why in text and f"still serving bundle {good}" in text
        assert page["reranked"] and page["bundle"] == good
        app.close()


def test_without_any_bundle_the_page_says_why_and_the_server_keeps_running(feed_env, tmp_path):
    from examples.feed_app.server import FeedServer

    missing = tmp_path / "missing"
    server = FeedServer(
        ("127.0.0.1", 0),
        lambda: FeedApp(tmp_path / "home", PoolSlates(feed_env.pool), bundle=missing, trust=feed_env.trust),
        quiet=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            get_json(f"{server.url}api/page", {})
        assert answer.value.code == 503
        page = json.load(answer.value)
        text = " ".join(n["text"] for n in page["notices"])
        assert f"{missing}: no such bundle" in text and "dir-device install" in text and page["cards"] == []
        with urllib.request.urlopen(server.url, timeout=10) as index:
            assert b"DIR feed" in index.read()
        with pytest.raises(urllib.error.HTTPError) as answer:
            get_json(f"{server.url}api/click", {"item_id": "x", "source": "video"})
        assert answer.value.code == 409
    finally:
        server.shutdown()
        server.server_close()


def test_bad_slate_files_are_skipped_with_a_notice_naming_them(feed_env, tmp_path):
    pool = shutil.copytree(feed_env.pool, tmp_path / "pool")
    (pool / "000" / "slate.json").write_text('{"user_id": "u1", "sources": [', encoding="utf-8")
    other = read_slate(pool / "001" / "slate.json").model_copy(update={"embedding_version": "old"})
    (pool / "001" / "slate.json").write_text(other.model_dump_json(), encoding="utf-8")
    app = FeedApp(tmp_path / "home", PoolSlates(pool), bundle=feed_env.bundle, trust=feed_env.trust)
    page = app.page()
    assert page["reranked"] and page["origin"] == "002/slate.json"
    text = " ".join(n["text"] for n in page["notices"])
    assert "001/slate.json" in text and "slate.embedding_version 'old'" in text
    app.close()


def test_cli_names_a_missing_pool_folder(tmp_path, capsys):
    assert feed_main(["--slates", str(tmp_path / "nope"), "--home", str(tmp_path / "home")]) == 2
    assert f"{tmp_path / 'nope'}: no such slate folder" in capsys.readouterr().err


def test_build_pool_writes_the_busiest_users_lists_in_time_order(feed_env):
    from cloud.data.prepared import PreparedData
    from examples.feed_app.build_pool import build_pool

    data = PreparedData(feed_env.data)
    users = data.users()
    splits = {name: data.split(name) for name in ("train", "valid", "test")}
    counts = np.bincount(np.concatenate([a["user"] for a in splits.values()]), minlength=len(users))
    pool = PoolSlates(feed_env.pool)
    slates = [read_slate(path) for path in pool.files]
    assert feed_env.user == users[int(np.argmax(counts))] and len(slates) == counts.max()
    assert {s.user_id for s in slates} == {feed_env.user}
    times = [float(splits[split]["ts"][int(row)]) for split, row in (s.request_id.split("-") for s in slates)]
    assert times == sorted(times)
    history = pool.seed_history()
    assert len(history) == feed_env.pool_summary["history"] and all(e.ts < times[0] for e in history)
    catalog = read_catalog(feed_env.pool)
    for slate in slates:
        for entry in slate.sources:
            for item in entry.items:
                title, description = catalog[entry.source, item.item_id]
                assert item.title == title and f"{entry.source} #" in title and f"{entry.source} about " in description
    with pytest.raises(FileExistsError, match="pass --force"):
        build_pool(feed_env.run, feed_env.pool)


def test_movielens_titles_and_genres_name_the_items(tmp_path):
    from examples.feed_app.build_pool import read_titles

    movies = tmp_path / "movies.csv"
    movies.write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n2,"Heat, The (1995)",Action|Crime\n',
        encoding="utf-8",
    )
    assert read_titles(movies) == {
        "1": ("Toy Story (1995)", "Adventure · Animation · Children"),
        "2": ("Heat, The (1995)", "Action · Crime"),
    }
