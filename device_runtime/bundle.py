"""Model bundles on the device: verify, install atomically, keep the previous ones, roll back.

    registry = BundleRegistry("~/.dir-device")
    registry.install("bundle.zip")      # or a bundle directory; refuses a bad one, the active one stays
    registry.active().path              # root/versions/<model_version>-<manifest hash>
    registry.rollback()                 # back to the previously active bundle

Layout under `root`: `versions/<version>/` (manifest.json + model files) and `current`, a small JSON
pointer `{"active": version, "previous": [older versions, newest first]}` replaced with `os.replace`,
so readers always see either the old or the new bundle, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypedDict

from pydantic import ValidationError

from shared_schema import SCHEMA_VERSION, BundleManifest
from shared_schema.files import atomic_write_bytes, file_sha256
from shared_schema.manifest import DECODERS, MANIFEST_NAME, SAFE_NAME, BundleFile, decoder_settings

log = logging.getLogger(__name__)
LOAD_CHECK_ORDER = ("tflite:cpu", "tflite:xnnpack", "executorch:portable", "executorch:xnnpack")
"""What install tries to prove that this runtime can load at least one file of the bundle."""
GENERIC_DELEGATES = {"tflite": ("cpu", "xnnpack"), "executorch": ("portable", "cpu", "xnnpack")}
"""Files of these delegates must all load at install (NPU/GPU files need their hardware: not checked)."""
MAGIC = {".tflite": (4, (b"TFL3",)), ".pte": (4, (b"ET12",))}
"""File identifier at an offset: checked before a runtime sees the file (ExecuTorch aborts the process on
a program whose header is garbage)."""
MAX_ZIP_MEMBER = 512 << 20
MAX_ZIP_TOTAL = 1 << 30
MAX_ZIP_MEMBERS = 256


@dataclass(frozen=True)
class InstalledBundle:
    """An installed bundle: its version name, directory and manifest."""

    version: str
    path: Path
    manifest: BundleManifest


class _Pointer(TypedDict):
    """The registry's pointer file: the active version and the ones kept for rollback, newest first."""

    active: str | None
    previous: list[str]


def read_manifest(bundle_dir: str | os.PathLike[str]) -> BundleManifest:
    """Parse `bundle_dir/manifest.json`, checking the schema version before anything else."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a bundle holds {MANIFEST_NAME} next to its model files")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-download the bundle") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {version!r} is not supported by this runtime (it reads {SCHEMA_VERSION}); "
            f"install a bundle exported for schema {SCHEMA_VERSION} or upgrade dir-rerank"
        )
    try:
        manifest = BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: not a valid bundle manifest: {exc}") from exc
    _check_consistent(manifest, path)
    return manifest


def verify(bundle_dir: str | os.PathLike[str]) -> BundleManifest:
    """Check the manifest and every listed file's size and sha256; return the manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    for entry in manifest.files:
        path = bundle_dir / _safe_relative(entry.path)
        if path.is_symlink():
            raise ValueError(f"{path}: a symbolic link; a bundle holds plain files only")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {MANIFEST_NAME} but missing; re-download the bundle")
        size = path.stat().st_size
        if size != entry.size:
            raise ValueError(
                f"{path}: {size} bytes, {MANIFEST_NAME} says {entry.size} (truncated or wrong file); "
                "re-download the bundle"
            )
        digest = file_sha256(path)
        if digest != entry.sha256:
            raise ValueError(
                f"{path}: sha256 {digest} does not match {MANIFEST_NAME} ({entry.sha256}); "
                "the file is corrupt, re-download the bundle"
            )
    return manifest


class BundleRegistry:
    """Installed bundles under `root`; `keep` bounds how many versions stay on disk."""

    def __init__(self, root: str | os.PathLike[str], keep: int = 3):
        if keep < 2:
            raise ValueError(f"keep must be >= 2 (the active bundle and one to roll back to), got {keep}")
        self.root = Path(root).expanduser().absolute()
        self.keep = keep
        self.versions_dir = self.root / "versions"
        self.pointer = self.root / "current"

    verify = staticmethod(verify)

    def install(self, path: str | os.PathLike[str], check: Callable[[Path], None] | None = None) -> InstalledBundle:
        """Verify the bundle at `path` (directory or .zip), copy it in, and make it the active one.

        `check(folder)` runs on the bundle folder (a zip extracted) before anything is copied: the
        signature policy of `device_runtime.signed.install`. This method alone checks integrity, not origin.
        """
        source = Path(path).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such bundle (give a bundle directory or .zip)")
        if source.is_symlink():
            raise ValueError(f"{source}: a symbolic link; give the bundle directory or .zip itself")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        try:
            if source.is_file():
                source = _extract_zip(source, staging / "unzipped")
            else:  # checked and copied from one private copy: the original may change meanwhile
                source = Path(shutil.copytree(source, staging / "source", symlinks=True))
            _refuse_links(source)
            if check is not None:
                check(source)
            manifest = read_manifest(source)
            copy = staging / "bundle"
            copy.mkdir()
            for name in [MANIFEST_NAME, *(f.path for f in manifest.files)]:
                src = source / _safe_relative(name)
                if src.is_symlink():
                    raise ValueError(f"{src}: a symbolic link; a bundle holds plain files only")
                if not src.is_file():
                    raise FileNotFoundError(f"{src}: listed in {MANIFEST_NAME} but missing; re-download the bundle")
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, copy / name)
            verify(copy)
            _check_loadable(copy, manifest)
            version = _version_name(manifest, copy / MANIFEST_NAME)
            target = self.versions_dir / version
            if not _intact(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(copy, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        state = self._state()
        if state["active"] != version:
            previous = [v for v in [state["active"], *state["previous"]] if v and v != version]
            self._write_state(version, previous)
        return self._installed(version)

    def active(self) -> InstalledBundle | None:
        """The active bundle, or None when nothing is installed."""
        version = self._state()["active"]
        return None if version is None else self._installed(version)

    def _installed(self, version: str) -> InstalledBundle:
        path = self.versions_dir / version
        return InstalledBundle(version, path, read_manifest(path))

    def serving(self) -> InstalledBundle | None:
        """The active bundle after a full check of its files; when they are damaged on disk, the newest
        previous version that checks out becomes active again (logged with the reason). None when nothing
        is installed; ValueError when no installed version is intact."""
        state = self._state()
        if state["active"] is None:
            return None
        reasons = []
        for i, version in enumerate([state["active"], *state["previous"]]):
            try:
                manifest = verify(self.versions_dir / version)
            except (FileNotFoundError, ValueError) as exc:
                reasons.append(f"{version}: {exc}")
                continue
            if i:
                log.warning(
                    "the active bundle is damaged (%s); falling back to the previous good version %s",
                    "; ".join(reasons),
                    version,
                )
                self._write_state(version, state["previous"][i:])
            return InstalledBundle(version, self.versions_dir / version, manifest)
        raise ValueError(f"{self.root}: no installed bundle is intact ({'; '.join(reasons)}); install one again")

    def previous(self) -> list[str]:
        """Versions kept for rollback, newest first."""
        return list(self._state()["previous"])

    def rollback(self) -> InstalledBundle:
        """Make the previously active bundle active again; the rolled-back one is removed."""
        state = self._state()
        if not state["previous"]:
            raise ValueError(f"{self.root}: no previous bundle to roll back to")
        self._write_state(state["previous"][0], state["previous"][1:])
        return self._installed(state["previous"][0])

    def _state(self) -> _Pointer:
        if not self.pointer.exists():
            return {"active": None, "previous": []}
        try:
            state = json.loads(self.pointer.read_text(encoding="utf-8"))
            versions = [state["active"], *state["previous"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.pointer}: unreadable bundle pointer ({exc}); reinstall a bundle") from exc
        for version in versions:
            folder = self.versions_dir / str(version)
            if (
                not isinstance(version, str)
                or not SAFE_NAME.fullmatch(version)
                or folder.is_symlink()
                or not folder.is_dir()
            ):
                raise ValueError(
                    f"{self.pointer}: names {version!r}, which is not a version folder under "
                    f"{self.versions_dir}; reinstall a bundle"
                )
        return {"active": versions[0], "previous": versions[1:]}

    def _write_state(self, active: str, previous: list[str]) -> None:
        previous = previous[: self.keep - 1]
        atomic_write_bytes(self.pointer, json.dumps({"active": active, "previous": previous}).encode())
        for stale in set(p.name for p in self.versions_dir.iterdir()) - {active, *previous}:
            if not stale.startswith(".staging-"):
                shutil.rmtree(self.versions_dir / stale, ignore_errors=True)


def _check_consistent(manifest: BundleManifest, path: Path) -> None:
    m = len(manifest.sources)
    if len(manifest.vector_dims) != m or len(manifest.target_shares) != m:
        raise ValueError(
            f"{path}: {m} sources but {len(manifest.vector_dims)} vector_dims and "
            f"{len(manifest.target_shares)} target_shares"
        )
    layout = manifest.layout()
    if manifest.inputs != layout.input_specs() or manifest.outputs[:1] != layout.output_specs():
        raise ValueError(f"{path}: inputs/outputs do not follow the tensor layout for n, t and vector_dims")
    try:
        decoder_settings(manifest.decoder, manifest.decoder_options)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    extra, wanted = [o.name for o in manifest.outputs[1:]], list(DECODERS[manifest.decoder].outputs)
    if extra != wanted:
        raise ValueError(f"{path}: outputs after 'scores' are {extra}, decoder {manifest.decoder!r} reads {wanted}")
    for spec in manifest.outputs[1:]:
        if len(spec.shape) != 3 or spec.shape[:2] != (1, layout.m * layout.n) or spec.shape[2] < 1:
            raise ValueError(
                f"{path}: output {spec.name!r} has shape {list(spec.shape)}, expected "
                f"[1, m*n={layout.m * layout.n}, k] (one row per candidate slot)"
            )
    if not manifest.files:
        raise ValueError(f"{path}: lists no model files")


def _intact(bundle_dir: Path) -> bool:
    """True when `bundle_dir` already holds a verified copy (reinstalling the same bundle keeps it)."""
    try:
        verify(bundle_dir)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _check_loadable(bundle_dir: Path, manifest: BundleManifest) -> None:
    """Headers of every model file, then every file of a generic delegate whose runtime is installed loads
    and runs once, and at least one does (LOAD_CHECK_ORDER)."""
    from device_runtime.backends import BackendError, load_backend

    for entry in manifest.files:
        offset, magics = MAGIC.get(PurePosixPath(entry.path).suffix, (0, ()))
        with open(bundle_dir / entry.path, "rb") as fh:
            head = fh.read(offset + 4)
        if magics and head[offset:] not in magics:
            raise ValueError(
                f"{bundle_dir / entry.path}: not a {entry.runtime} model (bytes {offset}-{offset + 3} "
                f"are {head[offset:]!r}, expected one of {list(magics)}); re-export the bundle"
            )
    for entry in manifest.files:
        if entry.delegate not in GENERIC_DELEGATES.get(entry.runtime, ()):
            continue
        try:
            load_backend(
                bundle_dir,
                _only(manifest, entry),
                entry.runtime,
                "portable" if entry.delegate == "cpu" and entry.runtime == "executorch" else entry.delegate,
            )
        except BackendError as exc:
            if "ImportError" in str(exc) or "ModuleNotFoundError" in str(exc):
                continue  # that runtime is not installed here: the other files serve
            raise ValueError(f"{bundle_dir / entry.path}: this runtime cannot load it: {exc}") from None
    try:
        load_backend(bundle_dir, manifest, order=LOAD_CHECK_ORDER)
    except BackendError as exc:
        raise ValueError(f"this runtime cannot load any file of the bundle: {exc}") from exc


def _only(manifest: BundleManifest, entry: BundleFile) -> BundleManifest:
    return manifest.model_copy(update={"files": [entry]})


def _refuse_links(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise ValueError(f"{path}: a symbolic link in the bundle; a bundle holds plain files only")


def _safe_relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"bundle file path {name!r} must be relative and stay inside the bundle")
    return rel


def _extract_zip(archive: Path, out: Path) -> Path:
    """Extract safely; returns the directory that holds manifest.json (top level or one folder down)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ValueError(f"{archive}: {len(members)} members; a bundle zip holds at most {MAX_ZIP_MEMBERS}")
            total, names = 0, set()
            for member in members:
                name = _zip_member(archive, member.filename)
                if name in names:
                    raise ValueError(f"{archive}: member {member.filename!r} appears twice")
                names.add(name)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ValueError(
                        f"{archive}: member {member.filename!r} is a symbolic link; a bundle holds plain files only"
                    )
                total += member.file_size
                if member.file_size > MAX_ZIP_MEMBER or total > MAX_ZIP_TOTAL:
                    raise ValueError(
                        f"{archive}: member {member.filename!r} makes {total} bytes unpacked; the caps "
                        f"are {MAX_ZIP_MEMBER} per member and {MAX_ZIP_TOTAL} in all"
                    )
            out.mkdir(parents=True, exist_ok=True)
            for member in members:
                _extract_member(zf, member, out / _zip_member(archive, member.filename), archive)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"{archive}: not a readable zip ({exc}); re-download the bundle") from exc
    if (out / MANIFEST_NAME).is_file():
        return out
    inner = [p for p in out.iterdir() if (p / MANIFEST_NAME).is_file()]
    if len(inner) != 1:
        raise FileNotFoundError(f"{archive}: no {MANIFEST_NAME} at the top level or in a single folder")
    return inner[0]


def _zip_member(archive: Path, name: str) -> str:
    """A zip member name as a plain relative path (a trailing '/' marks a folder), else ValueError."""
    parts = name.removesuffix("/").split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{archive}: member name {name!r} must be a plain relative path inside the bundle")
    return "/".join(parts)


def _extract_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Write one member, counting the bytes it really unpacks to (not the size its header states)."""
    try:
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(target, "xb") as dst:
            written = 0
            for block in iter(lambda: src.read(1 << 20), b""):
                written += len(block)
                if written > member.file_size:
                    raise ValueError(f"{archive}: member {member.filename!r} unpacks to more than its stated size")
                dst.write(block)
    except OSError as exc:  # a file where a folder should be, or the other way round
        raise ValueError(
            f"{archive}: member {member.filename!r} cannot be extracted ({exc.strerror}); "
            "re-create the zip from the bundle folder"
        ) from None


def _version_name(manifest: BundleManifest, manifest_path: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", manifest.model_version)[:64]
    return f"{safe}-{file_sha256(manifest_path)[:12]}"
