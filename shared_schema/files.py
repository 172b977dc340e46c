"""Atomic file and folder publishing and a file's sha256, for both sides (standard library only).

    atomic_write_bytes(Path("RUN/metrics.json"), data)   # readers see the old file or the new one, never half
    file_sha256(Path("bundle/model.tflite"))             # hex digest, read in 1 MiB blocks
    with replace_dir(Path("out/data"), force=True) as tmp:
        (tmp / "dataset.json").write_text(...)           # on success tmp replaces out/data; on error it is removed

Replacing an existing folder takes two renames (out -> .NAME.old-*/NAME, then tmp -> out). A process
killed in between leaves out absent and the old folder complete under .NAME.old-*; `recover_dir`
(run by every replace_dir, and by callers before they test whether out exists) moves it back and
removes the hidden .NAME.tmp-* / .NAME.old-* leftovers of killed runs. One writer per folder at a time.

They live in the shared package because the device runtime may import nothing of the cloud, and the cloud
installs without the device runtime's dependencies.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a temp file in the same folder, fsync it, rename it over `path`, then fsync the folder
    (where the platform allows), so a crash leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recover_dir(out: Path) -> bool:
    """Undo what a killed replace_dir left beside `out`: restore out from its old copy (returns True when it
    did), drop leftovers."""
    if not out.parent.is_dir():
        return False
    name = glob.escape(out.name)
    olds = sorted(out.parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    kept = None if out.exists() else next((old / out.name for old in olds if (old / out.name).is_dir()), None)
    if kept is not None:
        kept.rename(out)
    for leftover in [*olds, *out.parent.glob(f".{name}.tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    return kept is not None


@contextmanager
def replace_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if recover_dir(out) and not force:
        raise FileExistsError(f"{out}: restored from a run killed while replacing it; pass --force to replace it")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out.exists():
            if not force:
                raise FileExistsError(f"{out}: appeared while it was being written; pass --force to replace it")
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
