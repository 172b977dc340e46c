"""The bundles folder the service offers for download: one bundle per subfolder (manifest.json + files).

    folder = BundleFolder("bundles")
    folder.scan()              # intact bundles, newest created_at first (broken ones are logged and left out)
    folder.get("latest")       # or a folder name; KeyError naming the available versions

A bundle is offered only when its manifest parses, has this schema version and every listed file has
the size and sha256 the manifest states (hashes are cached by file size and mtime, so a rescan is cheap).
Hidden folders (write_bundle's temporary `.NAME.tmp-*`) are ignored.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from shared_schema import SCHEMA_VERSION, BundleManifest
from shared_schema.files import file_sha256
from shared_schema.manifest import MANIFEST_NAME, plain_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedFile:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    """An intact bundle: `files` maps each downloadable name (manifest.json first) to its file."""

    version: str
    manifest: BundleManifest
    created: datetime
    files: dict[str, ServedFile]


class BundleFolder:
    """Scans `root` on every call; only changed files are hashed again."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.root}: no such bundles folder; create it and export into it with "
                f"`dir-cloud export --run RUN --out {self.root}/NAME`"
            )
        self._hashes: dict[Path, tuple[int, int, str]] = {}
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()

    def scan(self) -> list[Bundle]:
        """Intact bundles, newest first (ties: folder name)."""
        bundles = []
        for folder in sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()
        ):
            try:
                bundles.append(self._read(folder))
            except (OSError, ValueError) as exc:
                self._refuse(folder.name, str(exc))
        bundles.sort(key=lambda b: (b.created, b.version), reverse=True)
        return bundles

    def get(self, version: str) -> Bundle:
        """The bundle named `version` ("latest": the newest); KeyError listing what there is."""
        bundles = self.scan()
        if version == "latest" and bundles:
            return bundles[0]
        for bundle in bundles:
            if bundle.version == version:
                return bundle
        names = [b.version for b in bundles]
        raise KeyError(
            f"bundle version {version!r} not found; available versions: {names or 'none'} "
            f"(newest first, 'latest' = {names[0] if names else 'none'}); list them with GET /v1/bundles"
        )

    def _read(self, folder: Path) -> Bundle:
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ValueError(f"no {MANIFEST_NAME}")
        try:
            manifest = BundleManifest.model_validate_json(manifest_path.read_bytes())
        except ValidationError as exc:
            raise ValueError(f"{MANIFEST_NAME} is not a valid bundle manifest: {exc}") from None
        if manifest.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {manifest.schema_version}, this service offers {SCHEMA_VERSION}")
        try:
            created = datetime.fromisoformat(manifest.created_at)
        except ValueError:
            raise ValueError(f"created_at {manifest.created_at!r} is not an ISO date") from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        files = {MANIFEST_NAME: self._file(manifest_path)}
        for entry in manifest.files:
            rel = PurePosixPath(entry.path)
            if rel.is_absolute() or ".." in rel.parts or str(rel) == MANIFEST_NAME:
                raise ValueError(f"file path {entry.path!r} must be relative, inside the bundle")
            if not (folder / rel).resolve().is_relative_to(folder.resolve()):
                raise ValueError(f"file path {entry.path!r} leads out of the bundle through a symbolic link")
            found = self._file(folder / rel)
            if (found.size, found.sha256) != (entry.size, entry.sha256):
                raise ValueError(
                    f"{entry.path}: {found.size} bytes, sha256 {found.sha256[:12]}..., but the "
                    f"manifest says {entry.size} bytes, {entry.sha256[:12]}...; re-export the bundle"
                )
            files[entry.path] = found
        self._refused.pop(folder.name, None)
        return Bundle(folder.name, manifest, created, files)

    def _file(self, path: Path) -> ServedFile:
        if path.is_symlink():
            raise ValueError(f"{path.name} is a symbolic link; a bundle is served from plain files only")
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._hashes.get(path)
        if cached is None or cached[:2] != key:
            cached = (*key, file_sha256(path))
            with self._lock:
                self._hashes[path] = cached
        return ServedFile(path, cached[2], stat.st_size)

    def _refuse(self, name: str, reason: str) -> None:
        """Log a broken bundle once per distinct reason."""
        if self._refused.get(name) != reason:
            self._refused[name] = reason
            log.warning("bundle %s/%s is not offered: %s", self.root, name, reason)


class SignedFiles:
    """The files of a signed (TUF) repository, `dir-cloud repo init`: `metadata/NAME` and `targets/PATH`.

    `path(kind, name)` is the file to serve, or KeyError: every part of `name` must be a plain name
    (SAFE_NAME), and no symbolic link is followed or served.
    """

    KINDS = ("metadata", "targets")

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "metadata" / "1.root.json").is_file():
            raise FileNotFoundError(
                f"{self.root}: not a signed repository (no metadata/1.root.json); create it "
                "with `dir-cloud repo init --repo DIR --keys KEYS`"
            )

    def path(self, kind: str, name: str) -> Path:
        if kind not in self.KINDS or not plain_path(name, max_parts=5):
            raise KeyError(f"{kind}/{name}: no such file in the signed repository")
        path = self.root / kind
        for part in name.split("/"):
            path = path / part
            if path.is_symlink():
                raise KeyError(f"{kind}/{name}: no such file in the signed repository")
        if not path.is_file():
            raise KeyError(f"{kind}/{name}: no such file in the signed repository")
        return path
