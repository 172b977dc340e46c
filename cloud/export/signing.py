"""A TUF repository of model bundles (The Update Framework, python-tuf's Metadata API): the signed way
devices update.

    create_keys("keys")                                   # keys/root.pem (keep OFFLINE), targets/snapshot/timestamp.pem
    repo = SignedRepository.init("repo", "keys/root.pem", "keys")   # metadata/1.root.json ... timestamp.json
    repo.add_bundle("bundles/v2", "keys")                # signs the files with the online keys only
    repo.rotate("keys/root.pem", "new/root.pem")          # N+1.root.json signed by the old and the new root key

Layout (consistent snapshots, what `tuf.ngclient.Updater` fetches): `metadata/N.root.json` (every root
version), `metadata/N.targets.json`, `metadata/N.snapshot.json`, `metadata/timestamp.json`, and
`targets/VERSION/SHA256.NAME` for each bundle file plus `targets/SHA256.bundles.json`, the signed index
`{"latest": VERSION, "bundles": {VERSION: {"manifest_sha256", "created_at", "model_version"}}}`.
Every role has an Ed25519 key of its own and an expiry (EXPIRY_DAYS). The root key signs only the root
metadata (init, rotation): routine publishing needs the targets, snapshot and timestamp keys alone.
`add_bundle` also copies the current metadata into `BUNDLE/tuf/`, so the bundle folder or its zip can be
installed offline with the same signatures (`dir-device install`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from device_runtime.bundle import verify
from device_runtime.signed import CARRIED, INDEX
from shared_schema.files import file_sha256
from shared_schema.manifest import MANIFEST_NAME, SAFE_NAME

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 30, "timestamp": 7}


def create_keys(folder: str | os.PathLike) -> dict[str, Path]:
    """New Ed25519 keys, one PEM file per role (mode 0600); refuses to overwrite existing keys."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {role: folder / f"{role}.pem" for role in ROLES}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise FileExistsError(f"{existing}: keys exist already; give another --out (never overwrite a key)")
    for path in paths.values():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(CryptoSigner.generate_ed25519().private_bytes)
    return paths


def load_signer(path: str | os.PathLike) -> CryptoSigner:
    """The signer of a PEM private key file written by `create_keys`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such key file; create keys with `dir-cloud repo keys --out DIR`")
    try:
        return CryptoSigner(load_pem_private_key(path.read_bytes(), password=None))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def _expiry(role: str, days: dict[str, float] | None) -> datetime:
    return (datetime.now(UTC) + timedelta(days=(days or EXPIRY_DAYS).get(role, EXPIRY_DAYS[role]))).replace(
        microsecond=0
    )


class SignedRepository:
    """The metadata and target files under `folder` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.metadata = self.folder / "metadata"
        self.targets = self.folder / "targets"
        if not (self.metadata / "1.root.json").is_file():
            raise FileNotFoundError(
                f"{self.folder}: not a signed repository (no metadata/1.root.json); "
                "create it with `dir-cloud repo init`"
            )

    # -- creation and keys ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        folder: str | os.PathLike,
        root_key: str | os.PathLike,
        online_keys: str | os.PathLike,
        expiry_days: dict[str, float] | None = None,
    ) -> SignedRepository:
        """A new repository: root v1 signed by `root_key`, empty targets, snapshot and timestamp."""
        folder = Path(folder)
        if (folder / "metadata").exists():
            raise FileExistsError(f"{folder}/metadata exists: the repository is initialised already")
        signers = _online_signers(online_keys)
        root = Root(expires=_expiry("root", expiry_days))
        root.add_key(load_signer(root_key).public_key, "root")
        for role in ONLINE_ROLES:
            root.add_key(signers[role].public_key, role)
        (folder / "metadata").mkdir(parents=True)
        (folder / "targets").mkdir(exist_ok=True)
        root_md = Metadata(root)
        root_md.sign(load_signer(root_key))
        repo = cls.__new__(cls)
        repo.folder, repo.metadata, repo.targets = folder, folder / "metadata", folder / "targets"
        repo._write(root_md, "1.root.json")
        repo._publish(Metadata(Targets(expires=_expiry("targets", expiry_days))), signers, expiry_days, first=True)
        return repo

    def rotate(
        self,
        old_root_key: str | os.PathLike,
        new_root_key: str | os.PathLike | None = None,
        new_online_keys: str | os.PathLike | None = None,
        expiry_days: dict[str, float] | None = None,
    ) -> int:
        """Root version N+1 with the new root key and/or new online keys, signed by the old and the new root
        key (devices accept it by the old one they trust and learn the new one); returns N+1. New online
        keys re-sign targets, snapshot and timestamp."""
        old = load_signer(old_root_key)
        new = load_signer(new_root_key) if new_root_key else old
        current = self.root()
        root = current.signed
        if old.public_key.keyid not in root.roles["root"].keyids:
            raise ValueError(f"{old_root_key}: not the repository's current root key; rotation needs it")
        root.version += 1
        root.expires = _expiry("root", expiry_days)
        changes = {"root": new.public_key}
        if new_online_keys:
            changes.update({role: s.public_key for role, s in _online_signers(new_online_keys).items()})
        for role, key in changes.items():
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(key, role)
        md = Metadata(root)
        md.sign(old)
        if new.public_key.keyid != old.public_key.keyid:
            md.sign(new, append=True)
        self._write(md, f"{root.version}.root.json")
        if new_online_keys:
            self._publish(self._latest("targets"), _online_signers(new_online_keys), expiry_days)
        return root.version

    # -- publishing ----------------------------------------------------------------------------------
    def add_bundle(
        self,
        bundle_dir: str | os.PathLike,
        online_keys: str | os.PathLike,
        version: str | None = None,
        expiry_days: dict[str, float] | None = None,
    ) -> str:
        """Sign bundle `bundle_dir` (verified first) as `version` (default: its folder name), make it the
        latest, and carry the new metadata into `bundle_dir/tuf/`; returns the version."""
        bundle_dir = Path(bundle_dir)
        version = version or bundle_dir.name
        if not SAFE_NAME.fullmatch(version) or version == INDEX:
            raise ValueError(f"bundle version {version!r}: use 1-128 letters, digits, '.', '_', '-'")
        manifest = verify(bundle_dir)
        signers = _online_signers(online_keys)
        targets_md = self._latest("targets")
        targets = targets_md.signed
        for name in list(targets.targets):
            if name.startswith(f"{version}/"):
                del targets.targets[name]
        for name in [MANIFEST_NAME, *(f.path for f in manifest.files)]:
            self._add_target(targets, f"{version}/{name}", (bundle_dir / name).read_bytes())
        index = self.index()
        index["latest"] = version
        index["bundles"][version] = {
            "manifest_sha256": file_sha256(bundle_dir / MANIFEST_NAME),
            "created_at": manifest.created_at,
            "model_version": manifest.model_version,
        }
        self._add_target(targets, INDEX, json.dumps(index, indent=1, sort_keys=True).encode())
        self._publish(targets_md, signers, expiry_days)
        self.carry(bundle_dir)
        return version

    def refresh(self, online_keys: str | os.PathLike, expiry_days: dict[str, float] | None = None) -> None:
        """Re-sign targets, snapshot and timestamp with fresh expiry dates (run before they expire)."""
        self._publish(self._latest("targets"), _online_signers(online_keys), expiry_days)

    def carry(self, bundle_dir: str | os.PathLike) -> Path:
        """Copy every root version and the current targets, snapshot, timestamp and index into `bundle_dir/tuf/`."""
        out = Path(bundle_dir) / CARRIED
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        snapshot = self._latest("snapshot").signed
        targets_version = snapshot.meta["targets.json"].version
        names = [p.name for p in self.metadata.glob("*.root.json")]
        names += ["timestamp.json", f"{snapshot.version}.snapshot.json", f"{targets_version}.targets.json"]
        for name in names:
            shutil.copyfile(self.metadata / name, out / name)
        info = self._latest("targets").signed.targets.get(INDEX)
        if info is not None:
            shutil.copyfile(self._target_path(INDEX, info), out / INDEX)
        return out

    # -- reading -------------------------------------------------------------------------------------
    def root(self) -> Metadata[Root]:
        version = max(int(p.name.split(".")[0]) for p in self.metadata.glob("*.root.json"))
        return Metadata.from_file(str(self.metadata / f"{version}.root.json"))

    def index(self) -> dict:
        """The signed index of bundles (empty before the first add)."""
        info = self._latest("targets").signed.targets.get(INDEX)
        if info is None:
            return {"latest": None, "bundles": {}}
        return json.loads(self._target_path(INDEX, info).read_bytes())

    def _latest(self, role: str) -> Metadata:
        if role == "timestamp":
            return Metadata.from_file(str(self.metadata / "timestamp.json"))
        snapshot_version = self._latest("timestamp").signed.snapshot_meta.version
        if role == "snapshot":
            return Metadata.from_file(str(self.metadata / f"{snapshot_version}.snapshot.json"))
        version = self._latest("snapshot").signed.meta["targets.json"].version
        return Metadata.from_file(str(self.metadata / f"{version}.targets.json"))

    # -- writing -------------------------------------------------------------------------------------
    def _add_target(self, targets: Targets, name: str, data: bytes) -> None:
        info = TargetFile.from_data(name, data, ["sha256"])
        path = self._target_path(name, info)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_bytes(path, data)
        targets.targets[name] = info

    def _target_path(self, name: str, info: TargetFile) -> Path:
        folder, _, base = name.rpartition("/")
        return self.targets / folder / f"{info.hashes['sha256']}.{base}"

    def _publish(self, targets_md: Metadata, signers: dict[str, CryptoSigner], expiry_days, first=False) -> None:
        """Sign targets (version + 1), then a snapshot naming it, then a timestamp naming that."""
        previous = (
            {}
            if first
            else {
                "snapshot": self._latest("snapshot").signed.version,
                "timestamp": self._latest("timestamp").signed.version,
            }
        )
        targets = targets_md.signed
        if not first:
            targets.version += 1
        targets.expires = _expiry("targets", expiry_days)
        snapshot = Snapshot(
            version=previous.get("snapshot", 0) + 1,
            expires=_expiry("snapshot", expiry_days),
            meta={"targets.json": MetaFile(version=targets.version)},
        )
        timestamp = Timestamp(
            version=previous.get("timestamp", 0) + 1,
            expires=_expiry("timestamp", expiry_days),
            snapshot_meta=MetaFile(version=snapshot.version),
        )
        to_sign: list[tuple[str, Metadata[Any], str]] = [
            ("targets", Metadata(targets), f"{targets.version}.targets.json"),
            ("snapshot", Metadata(snapshot), f"{snapshot.version}.snapshot.json"),
            ("timestamp", Metadata(timestamp), "timestamp.json"),
        ]
        for role, md, name in to_sign:
            md.sign(signers[role])
            self._write(md, name)

    def _write(self, md: Metadata, name: str) -> None:
        _atomic_bytes(self.metadata / name, md.to_bytes(JSONSerializer(compact=False)))


def _online_signers(folder: str | os.PathLike) -> dict[str, CryptoSigner]:
    return {role: load_signer(Path(folder) / f"{role}.pem") for role in ONLINE_ROLES}


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
