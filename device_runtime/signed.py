"""Signed bundles on the device (The Update Framework, `tuf.ngclient.Updater`): the trusted root, signature
checks of offline bundles, and what may be installed at all.

    trust_root("~/.dir-device", "root.json")        # provision: the repository's root metadata, checked
    install(BundleRegistry(root), "bundle.zip")      # signatures (carried in BUNDLE/tuf/) checked, then installed
    allow_unsigned("~/.dir-device")                  # development only: unsigned bundles accepted, loudly

State under the registry root: `trust/metadata/` (the Updater's trusted metadata: `root.json` and the
newest timestamp, snapshot and targets it has seen, so an older, replayed version is refused) and
`trust/ALLOW_UNSIGNED` (present only on a device set up for development). Without either, every install
is refused: there is no silent unsigned mode. The same metadata directory serves offline installs and
`CloudClient.sync`, so both refuse rollbacks, expired metadata, wrong keys and tampered files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater

from device_runtime.bundle import BundleRegistry, InstalledBundle
from shared_schema.files import file_sha256
from shared_schema.manifest import MANIFEST_NAME, SAFE_NAME

log = logging.getLogger(__name__)
TRUST = "trust"
UNSIGNED_FLAG = "ALLOW_UNSIGNED"
INDEX = "bundles.json"
"""The signed index of bundles, a target of the repository (cloud.export.signing)."""
CARRIED = "tuf"
"""The folder of a bundle that carries its signed metadata, for offline installs."""
MAX_METADATA_BYTES = 1 << 20


class UntrustedBundle(ValueError):
    """A bundle or metadata that fails the signature policy (unsigned, tampered, expired, replayed...)."""


def metadata_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root).expanduser().absolute() / TRUST / "metadata"


def trusted(root: str | os.PathLike[str]) -> bool:
    """True when the device was provisioned with a root (`trust_root`)."""
    return (metadata_dir(root) / "root.json").exists()


def unsigned_allowed(root: str | os.PathLike[str]) -> bool:
    return (Path(root).expanduser() / TRUST / UNSIGNED_FLAG).is_file()


def trust_root(root: str | os.PathLike[str], root_json: str | os.PathLike[str]) -> dict[str, object]:
    """Provision the device with `root_json` (a TUF root, checked to be signed by its own root keys).

    Replaces any earlier trust (and the development flag): the metadata seen so far is forgotten.
    """
    if not Path(root_json).is_file():
        raise FileNotFoundError(
            f"{root_json}: no such root metadata file; copy the repository's metadata/1.root.json to the device"
        )
    data = Path(root_json).read_bytes()
    try:
        md = Metadata[Root].from_bytes(data)
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise UntrustedBundle(
            f"{root_json}: not a TUF root metadata file signed by its own root keys "
            f"({type(exc).__name__}: {exc}); give the repository's metadata/1.root.json"
        ) from None
    if md.signed.is_expired():
        raise UntrustedBundle(
            f"{root_json}: this root expired on {md.signed.expires.isoformat()}; "
            "give the repository's newest N.root.json"
        )
    folder = metadata_dir(root)
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)
    Updater(str(folder), "http://127.0.0.1/unused/", bootstrap=data)  # persists it as the trusted root
    keyids = sorted(md.signed.roles[Root.type].keyids)
    return {"trusted_root_version": md.signed.version, "root_keyids": keyids, "expires": md.signed.expires.isoformat()}


def allow_unsigned(root: str | os.PathLike[str]) -> dict[str, object]:
    """Development only: accept unsigned bundles on this device (removes any trusted root)."""
    folder = Path(root).expanduser() / TRUST
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / UNSIGNED_FLAG).write_text("unsigned bundles are accepted on this device (development only)\n")
    log.warning(
        "UNSIGNED BUNDLES ALLOWED on %s: anyone who can hand this device a bundle can run their model "
        "on it. For development only; provision a root with `dir-device trust ROOT.json`.",
        root,
    )
    return {"allow_unsigned": True}


def install(registry: BundleRegistry, path: str | os.PathLike[str]) -> InstalledBundle:
    """Install a bundle folder or zip under the device's signature policy (see the module docstring)."""
    return registry.install(path, check=lambda folder: check_bundle(registry.root, folder))


def require_policy(root: str | os.PathLike[str]) -> bool:
    """True when signatures are checked, False on a development device; UntrustedBundle when neither is set up."""
    if trusted(root):
        return True
    if unsigned_allowed(root):
        return False
    raise UntrustedBundle(
        f"{root}: this device trusts no signing root, so it installs no bundle; run "
        "`dir-device trust ROOT.json` with the repository's root metadata (or, for "
        "development only, `dir-device trust --allow-unsigned`)"
    )


def check_bundle(root: str | os.PathLike[str], folder: Path) -> None:
    """Refuse `folder` unless its carried metadata (`tuf/`) proves it under the trusted root.

    Raises UntrustedBundle naming what failed; on a development device an unsigned bundle passes with a
    warning.
    """
    if not require_policy(root):
        log.warning("installing %s WITHOUT a signature check (this device allows unsigned bundles)", folder)
        return
    carried = folder / CARRIED
    if not (carried / "timestamp.json").is_file():
        raise UntrustedBundle(
            f"{folder}: unsigned bundle (no {CARRIED}/timestamp.json); add it to the signed "
            "repository (`dir-cloud repo add`) and install the bundle folder it signs"
        )
    updater = Updater(str(metadata_dir(root)), "carried:/metadata/", fetcher=_FolderFetcher(carried), bootstrap=None)
    try:
        index = _refresh_and_index(updater, lambda info: _verified_bytes(info, carried / INDEX), folder)
    except tuf_errors.DownloadError as exc:
        raise UntrustedBundle(
            f"{carried}: the carried metadata is incomplete ({exc}); copy the whole bundle "
            "folder as `dir-cloud repo add` left it"
        ) from None
    digest = file_sha256(folder / MANIFEST_NAME) if (folder / MANIFEST_NAME).is_file() else None
    versions = [v for v, e in index.get("bundles", {}).items() if e.get("manifest_sha256") == digest]
    if not versions:
        raise UntrustedBundle(
            f"{folder}/{MANIFEST_NAME}: not signed (its sha256 {digest} is in no signed "
            "bundle of the carried metadata): the manifest was changed after signing"
        )
    version = versions[0]
    names = [MANIFEST_NAME, *manifest_files(folder / MANIFEST_NAME)]
    for name in names:
        _verified_bytes(_targetinfo(updater, f"{version}/{name}"), folder / name)


def signed_index(updater: Updater, fetch: Callable[[TargetFile], bytes]) -> dict[str, Any]:
    """Refresh `updater` and return the signed bundle index, with TUF failures as UntrustedBundle."""
    return _refresh_and_index(updater, fetch, "the service")


def target(updater: Updater, name: str) -> TargetFile:
    return _targetinfo(updater, name)


def _refresh_and_index(updater: Updater, fetch: Callable[[TargetFile], bytes], where: str | Path) -> dict[str, Any]:
    try:
        updater.refresh()
        info = updater.get_targetinfo(INDEX)
    except tuf_errors.DownloadError:
        raise
    except (tuf_errors.RepositoryError, ValueError) as exc:
        raise UntrustedBundle(
            f"{where}: the signed metadata does not check out under the trusted root "
            f"({type(exc).__name__}: {exc}); the active bundle stays"
        ) from None
    if info is None:
        raise UntrustedBundle(f"{where}: the signed metadata lists no bundle index ({INDEX})")
    try:
        index = json.loads(fetch(info))
    except ValueError as exc:
        raise UntrustedBundle(f"{where}: the signed index is not JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("bundles"), dict):
        raise UntrustedBundle(f"{where}: the signed index has no 'bundles' mapping")
    return index


def _targetinfo(updater: Updater, name: str) -> TargetFile:
    info = updater.get_targetinfo(name)
    if info is None:
        raise UntrustedBundle(f"{name}: not a signed file of the repository; the bundle was changed after signing")
    return info


def _verified_bytes(info: TargetFile, path: Path) -> bytes:
    if path.is_symlink() or not path.is_file():
        raise UntrustedBundle(f"{path}: missing (or a symbolic link); it is signed as {info.path}")
    data = path.read_bytes()
    try:
        info.verify_length_and_hashes(data)
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise UntrustedBundle(
            f"{path}: does not match its signed length and sha256 ({exc}); the file was "
            "changed after signing, re-download the bundle"
        ) from None
    return data


def manifest_files(path: Path) -> list[str]:
    """The file names a (signed) manifest lists; ValueError when it is not a JSON object."""
    raw = json.loads(path.read_bytes())
    if not isinstance(raw, dict) or not isinstance(raw.get("files", []), list):
        raise ValueError(f"{path}: not a bundle manifest (no 'files' list)")
    files = raw.get("files", [])
    return [f["path"] for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)]


class _FolderFetcher(FetcherInterface):
    """Serves the metadata carried in a bundle's `tuf/` folder to the Updater (offline installs)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        path = self.folder / name
        if (
            not SAFE_NAME.fullmatch(name)
            or path.is_symlink()
            or not path.is_file()
            or path.stat().st_size > MAX_METADATA_BYTES
        ):
            raise tuf_errors.DownloadHTTPError(f"{name} is not carried with the bundle", 404)
        return iter([path.read_bytes()])
