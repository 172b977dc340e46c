"""WAL checkpoints of a SQLite file in a background thread, off the writers' request path.

    checkpointer = Checkpointer(Path("history.db"), every=50)
    conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")  # on the writing connection
    checkpointer.committed()  # after each of its commits
    checkpointer.close()      # waits for a running checkpoint, then stops the thread

SQLite's own automatic checkpoint runs inside the COMMIT that pushes the WAL past 1000 pages: that one
write pays for copying every page back into the database file and for the fsyncs (a few ms, more on a
phone's flash). Here a daemon thread with its own connection runs `PRAGMA wal_checkpoint(PASSIVE)`
every `every` commits instead; a passive checkpoint never blocks readers or writers, and the sqlite3
module releases the GIL while SQLite works, so the writer goes on at once. The log restarts from its
beginning at the first write after a checkpoint that caught up with it, i.e. after any pause in the
writes; under writes without a pause it cannot, and SQLite's own checkpoint at `BACKSTOP_PAGES`
bounds the log (cheaply: the thread has already copied most pages).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

BACKSTOP_PAGES = 4000
"""wal_autocheckpoint for the writing connections: SQLite checkpoints inside a write only past this."""


class Checkpointer:
    """Checkpoints `path`'s WAL in a daemon thread (started on first use) every `every` commits."""

    def __init__(self, path: Path, every: int, busy_timeout_ms: int = 10_000) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {every!r}")
        self.path, self.every, self.busy_timeout_ms = path, every, busy_timeout_ms
        self._commits = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.error: str | None = None
        """The last checkpoint's error, if it failed (the next wake-up tries again)."""

    def committed(self) -> None:
        """Count a commit; every `every`-th wakes the thread."""
        self._commits += 1
        if self._commits % self.every:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"checkpoint {self.path.name}", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
