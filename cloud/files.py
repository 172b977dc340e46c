"""Whole-folder outputs written atomically: readers see the old folder or the new one, never half.

    with replace_dir(Path("out/data"), force=True) as tmp:
        (tmp / "dataset.json").write_text(...)      # on success tmp replaces out/data; on error it is removed
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_dir(out: Path, force: bool):
    """Yield a temp folder beside `out`; on success it replaces `out`, on failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
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
