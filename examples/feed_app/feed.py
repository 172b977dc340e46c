"""The feed's state behind the web page: bundle, reranker, current slate, clicks and notices.

    app = FeedApp("~/.dir-feed", PoolSlates("pool"), bundle="bundle/")
    page = app.page()                    # dict: cards (merged order), exposure, timings, notices...
    app.click("video00012", "video")     # stored in SQLite; the next app.page() reranks with it
    page = app.page(advance=True)        # the next slate of the source
    app.last                             # the last page, unchanged (what GET /api/page answers)

app.page() reranks, so it records the exposures of the top K: the server calls it only for POST.

One thread only (the SQLite connection belongs to the thread that opened it): the web server runs every
call on a single worker thread. Failures the user can fix (refused bundle, full disk, bad slate file,
unreachable server) become `notices` shown in the page instead of exceptions.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from itertools import zip_longest
from pathlib import Path

from device_runtime import signed
from device_runtime.backends import BackendError
from device_runtime.bundle import BundleRegistry
from device_runtime.reranker import Reranker
from device_runtime.store import HistoryStore
from shared_schema import BehaviorEvent, CandidateSlate, RerankResult

MAX_SKIPS = 20
"""Slates tried in a row before a page gives up (bad files, fully clicked slates)."""


class FeedApp:
    """Serves feed pages from a slate source, reranked on the device with the bundle in `home/bundles`."""

    def __init__(
        self,
        home: str | os.PathLike,
        source,
        bundle: str | os.PathLike | None = None,
        db: str | os.PathLike | None = None,
        backend: str = "tflite",
        delegate: str = "auto",
        merge: str = "controller",
        threads: int = 1,
        trust: str | os.PathLike | None = None,
        allow_unsigned: bool = False,
        catalog: dict[tuple[str, str], tuple[str, str]] | None = None,
    ):
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.registry = BundleRegistry(self.home / "bundles")
        if trust is not None and not signed.trusted(self.registry.root):  # provisioned once: rollbacks stay refused
            signed.trust_root(self.registry.root, trust)
        elif allow_unsigned and not signed.trusted(self.registry.root):
            signed.allow_unsigned(self.registry.root)
        self.db_path = Path(db).expanduser() if db else self.home / "history.db"
        self.source = source
        self.options = {"backend": backend, "delegate": delegate, "merge": merge, "threads": threads}
        self.notices: dict[str, str] = {}
        self.catalog = catalog or {}  # (source, item_id) -> (title, description)
        self.last: dict | None = None
        self.reranker: Reranker | None = None
        self.slate: CandidateSlate | None = None
        self.origin = ""
        self.clicked: set[tuple[str, str]] = set()
        self.page_number = 0
        if bundle is None or not self.install(bundle):
            self._open()
        self._sync()

    # -- bundle ------------------------------------------------------------------------------------
    def install(self, path: str | os.PathLike) -> bool:
        """Install a bundle (dir or .zip) under the device's signature policy and rerank with it; a refused one
        leaves the active bundle serving."""
        try:
            signed.install(self.registry, path)
        except (OSError, ValueError) as exc:
            active = self._active_version()
            keep = f"still serving bundle {active}" if active else "no bundle is installed, so nothing can be reranked"
            self.notices["bundle"] = f"Bundle {path} was refused: {exc}. {keep}."
            return False
        self.notices.pop("bundle", None)
        self._open()
        return True

    def _active_version(self) -> str | None:
        try:
            active = self.registry.active()
        except (OSError, ValueError):
            return None
        return active.version if active else None

    def _sync(self) -> None:
        """Let the slate source install a newer bundle from the cloud (online mode) and reopen with it."""
        try:
            store = self.reranker.store if self.reranker else HistoryStore(self.db_path)
        except (OSError, ValueError, sqlite3.Error) as exc:
            self.notices["store"] = f"The history store {self.db_path} cannot be opened: {exc}"
            return
        try:
            report = self.source.sync(self.registry, store)
        except (OSError, ValueError) as exc:
            active = self._active_version()
            self.notices["bundle"] = (
                f"The cloud's newest bundle was refused: {exc}. "
                f"{f'Still serving bundle {active}' if active else 'No bundle is installed'}."
            )
            return
        except sqlite3.Error as exc:
            self._store_failed("Cached vectors were not refreshed", exc)
            return
        finally:
            if self.reranker is None or store is not self.reranker.store:
                store.close()
        if report is not None and report.installed:
            self.notices.pop("bundle", None)
            self._open()

    def _open(self) -> None:
        """(Re)open the reranker on the registry's active bundle; on failure say why in `notices`."""
        if self.reranker is not None:
            self.reranker.close()
            self.reranker = None
        try:
            self.reranker = Reranker.open(self.registry.root, self.db_path, **self.options)
        except (OSError, ValueError, BackendError, sqlite3.Error) as exc:
            self.notices["runtime"] = f"The device runtime could not start: {exc}"
            return
        self.notices.pop("runtime", None)
        self._seed_history()

    def _seed_history(self) -> None:
        """A new store starts with the source's seed behaviours (the user's history as the cloud logged it)."""
        store = self.reranker.store
        if store.stats()["rows"]["behaviors"]:
            return
        try:
            events = self.source.seed_history()
            for event in events:
                self.reranker.record(event)
        except (OSError, ValueError, sqlite3.Error) as exc:
            self.notices["history"] = f"Seed history not loaded: {exc}"

    # -- pages -------------------------------------------------------------------------------------
    def page(self, advance: bool = False) -> dict:
        """The current slate minus clicked items, reranked now (`advance`: the next slate first); kept as `last`."""
        self.last = self._page(advance)
        return self.last

    def _page(self, advance: bool) -> dict:
        if advance:
            self._sync()
            self.slate = None
        if self.slate is None:
            self.notices.pop("slate", None)  # a skipped file is reported once, with the page that skipped it
        if self.reranker is None:
            return self._view(None, [])
        for _ in range(MAX_SKIPS):
            if self.slate is None and not self._next_slate():
                continue
            remaining = self._unclicked(self.slate)
            if remaining is None:
                self.slate = None
                continue
            try:
                result = self.reranker.rerank(remaining)
            except ValueError as exc:
                self.notices["slate"] = f"Skipped slate {self.origin}: {exc}"
                self.slate = None
                continue
            except sqlite3.Error as exc:
                self._store_failed("Reranking is paused", exc)
                return self._view(None, _upstream_order(remaining))
            self.notices.pop("store", None)
            return self._view(result, [(r.item_id, r.source, r.title, r.score) for r in result.items])
        self.notices.setdefault("slate", "No usable slate")
        return self._view(None, [])

    def _next_slate(self) -> bool:
        try:
            self.slate, self.origin = self.source.next_slate()
        except ValueError as exc:
            self.notices["slate"] = f"Skipped a slate: {exc}"
            return False
        return True

    def _unclicked(self, slate: CandidateSlate) -> CandidateSlate | None:
        """The slate without the items clicked already; None when nothing is left."""
        sources = [
            entry.model_copy(
                update={"items": [i for i in entry.items if (entry.source, i.item_id) not in self.clicked]}
            )
            for entry in slate.sources
        ]
        if not any(entry.items for entry in sources):
            return None
        return slate.model_copy(update={"sources": sources})

    # -- clicks ------------------------------------------------------------------------------------
    def click(self, item_id: str, source: str) -> dict:
        """Record a click on an item of the current slate; {"recorded": bool, "error": text or None}."""
        item = self._find(item_id, source)
        if item is None or (source, item_id) in self.clicked:
            raise LookupError(f"item {source}/{item_id} is not on the current page; reload the page")
        event = BehaviorEvent(item_id=item_id, source=source, action="click", ts=time.time(), vector=item.vector)
        try:
            self.reranker.record(event)
        except sqlite3.Error as exc:
            return {"recorded": False, "error": self._store_failed(f"The click on {item_id} was not saved", exc)}
        self.notices.pop("store", None)
        self.clicked.add((source, item_id))
        return {"recorded": True, "error": None}

    def _find(self, item_id: str, source: str):
        if self.reranker is None or self.slate is None:
            return None
        for entry in self.slate.sources:
            if entry.source == source:
                return next((i for i in entry.items if i.item_id == item_id), None)
        return None

    def _store_failed(self, what: str, exc: sqlite3.Error) -> str:
        hint = (
            "free some space on the device; new clicks are not remembered until then"
            if "full" in str(exc)
            else "check the file and its folder"
        )
        self.notices["store"] = f"{what}: cannot write the history store {self.db_path} ({exc}); {hint}."
        return self.notices["store"]

    # -- the page's data ---------------------------------------------------------------------------
    def _view(self, result: RerankResult | None, cards: list[tuple]) -> dict:
        """Everything the page shows; `cards` are (item_id, source, title, score or None) in feed order."""
        self.page_number += 1
        mode, detail = self.source.mode()
        view = {
            "page": self.page_number,
            "mode": mode,
            "mode_detail": detail,
            "notices": ([{"kind": "cloud", "text": detail}] if mode == "fallback" else [])
            + [{"kind": k, "text": v} for k, v in self.notices.items()],
            "reranked": result is not None,
            "origin": self.origin,
            "user_id": self.slate.user_id if self.slate else None,
            "request_id": self.slate.request_id if self.slate else None,
            "cards": [],
            "exposure": [],
            "history": {},
            "timings_ms": {},
            "backend": None,
            "delegate": None,
            "merge": self.options["merge"],
            "bundle": None,
            "K": 0,
        }
        if self.reranker is None:
            return view
        m = self.reranker.manifest
        view.update(
            bundle=self.reranker.bundle.version,
            backend=self.reranker.backend.name,
            delegate=self.reranker.backend.delegate,
            K=m.K,
            attempts=[f"{b}:{d} -> {r}" for b, d, r in self.reranker.backend.attempts],
        )
        view["cards"] = [
            {
                "rank": rank,
                "item_id": item_id,
                "source": source,
                "title": title or self.catalog.get((source, item_id), (item_id, ""))[0],
                "description": self.catalog.get((source, item_id), ("", ""))[1],
                "score": score,
                "probability": None if score is None else 1 / (1 + math.exp(-score)),
                "slot": rank <= m.K,
            }
            for rank, (item_id, source, title, score) in enumerate(cards, start=1)
        ]
        if result is not None:
            view["timings_ms"] = result.timings_ms
        try:
            shown = self.reranker.store.exposure_counts(m.source_names)
            stats = self.reranker.store.stats()["behaviors"]
        except sqlite3.Error as exc:
            self._store_failed("The history store cannot be read", exc)
            return view
        total = int(shown.sum())
        view["exposure"] = [
            {"source": s, "shown": int(n), "share": n / total if total else 0.0, "target": target}
            for s, n, target in zip(m.source_names, shown, m.target_shares)
        ]
        view["history"] = {s: stats.get(s, {}).get("click", 0) for s in m.source_names}
        return view

    def close(self) -> None:
        if self.reranker is not None:
            self.reranker.close()


def _upstream_order(slate: CandidateSlate) -> list[tuple]:
    """The cloud's own order, sources interleaved, unscored: what the feed shows when it cannot rerank."""
    columns = [[(item.item_id, entry.source, item.title, None) for item in entry.items] for entry in slate.sources]
    return [card for row in zip_longest(*columns) for card in row if card is not None]
