"""Where the feed's candidate slates come from: a pool folder on disk (offline) or the cloud service.

    pool = PoolSlates("out/feed_app/pool")       # every *.json under it is a CandidateSlate, name order
    slate, origin = pool.next_slate()            # cycles; a bad file raises ValueError naming it
    pool.seed_history()                          # BehaviorEvents of history.jsonl beside the first slate
    cloud = CloudSlates(CloudClient("http://127.0.0.1:8000"), "u000042", fallback=pool)
    slate, origin = cloud.next_slate()           # from the server, or from the pool while it is unreachable
    cloud.sync(registry, store)                  # newest bundle + vector refresh, at most every sync_every_s

A pool folder is what `python -m examples.feed_app.build_pool` writes (POOL/000/slate.json + history.jsonl,
POOL/001/slate.json, ...) or any set of folders written by `dir-cloud slate --out POOL/NAME`.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

from pydantic import ValidationError

from device_runtime.client import CloudClient, CloudUnavailable, SyncReport
from shared_schema import BehaviorEvent, CandidateSlate

HISTORY_NAME = "history.jsonl"


class PoolSlates:
    """Slates from JSON files under a folder, served in file-name order and then again from the start."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"{self.folder}: no such slate folder; write one with `python -m examples.feed_app.build_pool "
                f"--run RUN --out {self.folder}` or `dir-cloud slate --run RUN --out {self.folder}/000`"
            )
        self.files = sorted(self.folder.rglob("*.json"))
        if not self.files:
            raise FileNotFoundError(
                f"{self.folder}: holds no *.json slate files; write some with "
                f"`python -m examples.feed_app.build_pool --run RUN --out {self.folder}`"
            )
        self._next = 0

    def __len__(self) -> int:
        return len(self.files)

    def mode(self) -> tuple[str, str]:
        """("offline", where the slates come from), for the page."""
        return "offline", f"{len(self.files)} slates in {self.folder}"

    def next_slate(self) -> tuple[CandidateSlate, str]:
        """The next slate and the file it came from; ValueError naming the file if it is not a slate."""
        path = self.files[self._next % len(self.files)]
        self._next += 1
        return read_slate(path), str(path.relative_to(self.folder))

    def seed_history(self) -> list[BehaviorEvent]:
        """The behaviours stored beside the first slate file (empty when there is no history.jsonl)."""
        path = self.files[0].parent / HISTORY_NAME
        if not path.is_file():
            return []
        events = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    events.append(BehaviorEvent.model_validate_json(line))
                except ValidationError as exc:
                    raise ValueError(
                        f"{path}, line {number}: not a behaviour event ({_first_error(exc)}); "
                        f"rewrite the pool with build_pool"
                    ) from None
        return events

    def sync(self, registry, store) -> SyncReport | None:
        """Nothing to sync offline."""
        return None


class CloudSlates:
    """Slates of one user from the cloud service; the offline pool while the service is unreachable.

    After a failure the service is asked again only after `retry_s` seconds, so a dead network costs
    one timeout per `retry_s`, not one per page.
    """

    def __init__(
        self, client: CloudClient, user: str, fallback: PoolSlates, retry_s: float = 30.0, sync_every_s: float = 300.0
    ):
        self.client, self.user, self.fallback = client, user, fallback
        self.retry_s, self.sync_every_s = retry_s, sync_every_s
        self.unavailable: str | None = None
        self._retry_at = self._sync_at = 0.0

    def mode(self) -> tuple[str, str]:
        if self.unavailable:
            return "fallback", f"Offline fallback, serving {self.fallback.mode()[1]}: {self.unavailable}"
        return "online", f"slates for user {self.user} from {self.client.base_url}"

    def next_slate(self) -> tuple[CandidateSlate, str]:
        if time.monotonic() >= self._retry_at:
            try:
                slate = self._ask(self.client.fetch_slate, self.user)
                return slate, f"cloud {self.client.base_url}"
            except CloudUnavailable:
                pass
        slate, origin = self.fallback.next_slate()
        return slate, f"offline pool {origin}"

    def seed_history(self) -> list[BehaviorEvent]:
        """Nothing: online, the history is what this device recorded (behaviour never leaves it)."""
        return []

    def sync(self, registry, store) -> SyncReport | None:
        """Install a newer bundle and refresh stale vectors, when due; None when skipped or unreachable.

        A bundle the registry refuses raises its ValueError (the active bundle stays)."""
        now = time.monotonic()
        if now < max(self._sync_at, self._retry_at):
            return None
        self._sync_at = now + self.sync_every_s
        try:
            return self._ask(self.client.sync, registry, store)
        except CloudUnavailable:
            self._sync_at = 0.0  # again as soon as the service is retried
            return None

    def _ask(self, fn, *args):
        try:
            answer = fn(*args)
        except CloudUnavailable as exc:
            self.unavailable = str(exc)
            self._retry_at = time.monotonic() + self.retry_s
            raise
        self.unavailable = None
        return answer


def read_catalog(folder: str | os.PathLike) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, item_id) -> (title, description) from FOLDER/catalog.csv (build_pool writes it); {} without one."""
    path = Path(folder).expanduser() / "catalog.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"source", "item_id", "title", "description"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; rebuild the pool with build_pool")
        return {(row["source"], row["item_id"]): (row["title"], row["description"]) for row in reader}


def read_slate(path: Path) -> CandidateSlate:
    """Parse one slate file; ValueError naming the file and the first bad field."""
    try:
        return CandidateSlate.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(
            f"{path}: not a candidate slate ({_first_error(exc)}); replace it or remove it from the pool"
        ) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"
