"""Client of the cloud service on the device: slates, vector refresh, bundle download and sync.

    client = CloudClient("http://127.0.0.1:8000", timeout=5)
    try:
        report = client.sync(BundleRegistry(root), store)   # newer bundle installed, stale vectors refreshed
        slate = client.fetch_slate("u000042")               # CandidateSlate for Reranker.rerank
        client.vectors                                      # "float16" after a sync to a bundle that allows it
    except CloudUnavailable as exc:                         # down, timeout, bad status, garbage answer
        ...                                                 # keep serving: installed bundle + cached vectors

Standard library HTTP (urllib), plus python-tuf for signed bundles (`device_runtime.signed`). Behaviour is
never sent: the client asks for slates, whole anonymity buckets of item vectors (a refresh never names
the items of the history) and bundles. Names from the network are checked (SAFE_NAME) before any use as
a path, and downloads go to a fresh private folder under ROOT/downloads.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TypeVar, overload
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ValidationError
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater, Urllib3Fetcher

from device_runtime import signed
from device_runtime.bundle import BundleRegistry, InstalledBundle
from device_runtime.store import HistoryStore
from shared_schema import CandidateItem, CandidateSlate, SourceCandidates
from shared_schema.files import file_sha256
from shared_schema.manifest import MANIFEST_NAME, MAX_FILE_PARTS, SAFE_NAME, BundleManifest, float16_allowed, plain_path
from shared_schema.messages import WireForm, media_type, wire_context, wire_form
from shared_schema.service import (
    BucketRequest,
    BundleEntry,
    BundleFileEntry,
    BundleList,
    ItemVectors,
    ListSlate,
    ServiceInfo,
    VectorRequest,
    item_bucket,
)

ACCEPT_VECTORS: dict[WireForm, str] = {
    "float32": f"{media_type('float32')}, application/json;q=0.5",
    "float16": f"{media_type('float16')}, {media_type('float32')};q=0.9, application/json;q=0.5",
}
"""What slate and vector requests accept, by the client's `vectors`: its compact form first, then the
forms of services that do not offer it (float32 compact, JSON numbers)."""
FLOAT16_TOLERANCE = 1e-3
"""Default largest score change (the bundle's measured `float16_vectors_max_abs_diff`) for which the
client asks for float16 vectors."""

log = logging.getLogger(__name__)
Message = TypeVar("Message", bound=BaseModel)
Headers = dict[str, str]
CHUNK = 1 << 16
DOWNLOADS = "downloads"
STALE_SECONDS = 3600


class CloudUnavailable(Exception):
    """The cloud could not answer usefully: unreachable, timed out, an error status or a garbage answer.

    `status` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class SyncReport:
    """What `CloudClient.sync` did."""

    installed: str | None = None  # registry version installed by this sync
    active: str | None = None  # registry version active afterwards
    refreshed: int = 0  # cached item vectors replaced by the current embedding version's
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (source, item_id) the cloud does not know
    skipped: str = ""  # why vectors were not refreshed, if they were not


class CloudClient:
    """HTTP client of `dir-cloud serve`; every failure is a `CloudUnavailable`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        vector_batch: int = 500,
        float16_tolerance: float | None = FLOAT16_TOLERANCE,
    ):
        """`float16_tolerance`: the largest score change from float16 vectors (measured at export, in the
        bundle's manifest) for which `use_bundle` switches to float16 vectors; None keeps float32."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r} must start with http:// or https://")
        if timeout <= 0 or vector_batch < 1:
            raise ValueError("timeout must be > 0 and vector_batch >= 1")
        self.base_url, self.timeout, self.vector_batch = base_url.rstrip("/"), timeout, vector_batch
        self.float16_tolerance = float16_tolerance
        self.vectors: WireForm = "float32"
        """The compact form slate and vector requests ask for first; `use_bundle` (and so `sync`) sets it."""

    def use_bundle(self, manifest: BundleManifest) -> None:
        """Ask for the vector form `manifest` allows: float16 when its measured score change is within
        `float16_tolerance`, else float32."""
        allowed = self.float16_tolerance is not None and float16_allowed(manifest, self.float16_tolerance)
        self.vectors = "float16" if allowed else "float32"

    # -- endpoints ---------------------------------------------------------------------------------
    def health(self) -> object:
        """The service's /health answer, parsed JSON as it came."""
        return self._get("/health", None)

    def version(self) -> ServiceInfo:
        return self._get("/version", ServiceInfo)

    def users(self, offset: int = 0, limit: int = 100) -> list[str]:
        """User ids the service builds slates for."""
        answer = self._get(f"/v1/users?{urlencode({'offset': offset, 'limit': limit})}", None)
        if not isinstance(answer, dict) or not isinstance(answer.get("users"), list):
            raise CloudUnavailable(f"GET {self.base_url}/v1/users: the answer has no user list")
        return [str(u) for u in answer["users"]]

    def fetch_slate(self, user: str, n: int | None = None) -> CandidateSlate:
        """The user's candidate slate (upstream top n per source, with vectors)."""
        query = f"?{urlencode({'n': n})}" if n is not None else ""
        return self._call(
            "GET",
            f"/v1/users/{quote(user, safe='')}/slate{query}",
            CandidateSlate,
            headers={"Accept": ACCEPT_VECTORS[self.vectors]},
        )

    def fetch_list(self, split: str, row: int) -> ListSlate:
        """A prepared list replayed as a slate, with its device-view history."""
        return self._get(f"/v1/lists/{quote(split, safe='')}/{int(row)}", ListSlate)

    def fetch_vectors(self, ids: Mapping[str, Sequence[str]]) -> ItemVectors:
        """Vectors of item ids per source, in requests of at most `vector_batch` ids."""
        pairs = [(s, i) for s, items in ids.items() for i in items]
        merged: dict[str, list[CandidateItem]] = {s: [] for s in ids}
        unknown: dict[str, list[str]] = {}
        version = None
        for start in range(0, max(len(pairs), 1), self.vector_batch):
            chunk: dict[str, list[str]] = {}
            for s, i in pairs[start : start + self.vector_batch]:
                chunk.setdefault(s, []).append(i)
            body = VectorRequest(ids=chunk).model_dump_json().encode()
            answer = self._post_vectors("/v1/vectors", body, version)
            version = answer.embedding_version
            for entry in answer.sources:
                merged.setdefault(entry.source, []).extend(entry.items)
            for s, missing in answer.unknown.items():
                unknown.setdefault(s, []).extend(missing)
        return ItemVectors(
            embedding_version=version,
            unknown=unknown,
            sources=[SourceCandidates(source=s, items=items) for s, items in merged.items()],
        )

    def fetch_bucket_vectors(self, ids: Mapping[str, Sequence[str]], info: ServiceInfo) -> ItemVectors:
        """Vectors of `ids` fetched as whole anonymity buckets: the requests name bucket numbers only, each
        bucket holding at least `info.min_bucket_items` items (or a source's whole table), so the service
        cannot tell which items of a bucket the device holds. `unknown` lists the ids no bucket returned."""
        wanted = [
            (s, b) for s, items in ids.items() for b in sorted({item_bucket(i, info.vector_buckets[s]) for i in items})
        ]
        merged: dict[str, dict[str, CandidateItem]] = {s: {} for s in ids}
        version = None
        for start in range(0, len(wanted), info.max_buckets):
            chunk: dict[str, list[int]] = {}
            for s, b in wanted[start : start + info.max_buckets]:
                chunk.setdefault(s, []).append(b)
            body = BucketRequest(buckets=chunk).model_dump_json().encode()
            answer = self._post_vectors("/v1/vectors/buckets", body, version)
            version = answer.embedding_version
            for entry in answer.sources:
                merged.setdefault(entry.source, {}).update({item.item_id: item for item in entry.items})
        unknown = {s: [i for i in items if i not in merged.get(s, {})] for s, items in ids.items()}
        return ItemVectors(
            embedding_version=version or info.embedding_version,
            unknown={s: missing for s, missing in unknown.items() if missing},
            sources=[SourceCandidates(source=s, items=list(items.values())) for s, items in merged.items()],
        )

    def _post_vectors(self, path: str, body: bytes, version: str | None) -> ItemVectors:
        """POST a vector request (compact vectors accepted); CloudUnavailable when the embedding version differs
        from `version`, the one earlier answers of the same refresh carried."""
        headers = {"Content-Type": "application/json", "Accept": ACCEPT_VECTORS[self.vectors]}
        answer = self._call("POST", path, ItemVectors, body, headers)
        if version not in (None, answer.embedding_version):
            raise CloudUnavailable(
                f"the service changed embedding version ({version} -> {answer.embedding_version}) during one "
                "refresh; sync again"
            )
        return answer

    def list_bundles(self) -> BundleList:
        return self._get("/v1/bundles", BundleList)

    def download_bundle(self, version: str, dest: str | os.PathLike[str]) -> Path:
        """Download bundle `version` into the new folder `dest`, checking every file's size and sha256.

        Files go to `.DEST.partial` next to `dest` first; an interrupted download resumes there with
        HTTP Range on the next call, and the folder is renamed to `dest` only when every file checks out.
        """
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise FileExistsError(f"{dest} exists; download into a new folder")
        entry = self._get(f"/v1/bundles/{quote(safe_version(version), safe='')}", BundleEntry)
        safe_version(entry.version)
        names = [f.path for f in entry.files]
        if MANIFEST_NAME not in names:
            raise CloudUnavailable(f"bundle {entry.version!r}: the listing has no {MANIFEST_NAME}; not a bundle")
        partial = dest.with_name(f".{dest.name}.partial")
        if partial.is_symlink():
            raise CloudUnavailable(f"{partial} is a symbolic link; refusing to download through it")
        partial.mkdir(parents=True, exist_ok=True)
        for item in entry.files:
            self._download(item, inside(partial, safe_file_name(item.path)))
        if entry.files[names.index(MANIFEST_NAME)].sha256 != entry.manifest_sha256:
            raise CloudUnavailable(f"bundle {entry.version!r}: listing and manifest checksum disagree")
        os.rename(partial, dest)
        return dest

    # -- sync --------------------------------------------------------------------------------------
    def sync(self, registry: BundleRegistry, store: HistoryStore, install: bool = True) -> SyncReport:
        """Install the service's latest bundle if it is newer than the active one (via the registry's
        verified install), then refresh cached vectors that are not of the active embedding version; the
        client then asks for the vector form the active bundle allows (`use_bundle`).

        A bundle the registry refuses raises its ValueError; the active bundle stays. After an install,
        reopen the Reranker to use it.
        """
        report = SyncReport()
        if install and signed.trusted(registry.root):
            report.installed = self._install_signed(registry)
        elif install and signed.unsigned_allowed(registry.root):
            log.warning(
                "syncing UNSIGNED bundles from %s: this device was set up with --allow-unsigned (development only)",
                self.base_url,
            )
            listing = self.list_bundles()
            latest = next((b for b in listing.bundles if b.version == listing.latest), None)
            if latest is not None and _is_newer(latest.manifest_sha256, latest.created_at, registry.active()):
                with private_folder(registry.root) as folder:
                    bundle = self.download_bundle(safe_version(latest.version), folder / "bundle")
                    report.installed = registry.install(bundle).version
        elif install:
            signed.require_policy(registry.root)  # raises UntrustedBundle: no trust set up
        active = registry.active()
        report.active = active.version if active else None
        if active is None:
            report.skipped = "no bundle is installed"
            return report
        self.use_bundle(active.manifest)
        self._refresh(active, store, report)
        return report

    def _install_signed(self, registry: BundleRegistry) -> str | None:
        """The signed index's latest bundle through `tuf.ngclient.Updater` (metadata under the trusted root,
        every file checked against its signed length and sha256), installed when newer; its version or None."""
        with private_folder(registry.root) as folder:
            updater = Updater(
                str(signed.metadata_dir(registry.root)),
                f"{self.base_url}/tuf/metadata/",
                target_dir=str(folder),
                target_base_url=f"{self.base_url}/tuf/targets/",
                fetcher=Urllib3Fetcher(socket_timeout=max(1, math.ceil(self.timeout))),
                bootstrap=None,
            )
            try:
                index = signed.signed_index(
                    updater, lambda info: Path(updater.download_target(info, str(folder / "index.json"))).read_bytes()
                )
                latest = index.get("latest")
                if latest is None:
                    return None
                entry = index["bundles"].get(safe_version(latest))
                if not isinstance(entry, dict) or not _is_newer(
                    str(entry.get("manifest_sha256")), str(entry.get("created_at")), registry.active()
                ):
                    return None
                bundle = folder / "bundle"
                bundle.mkdir()
                manifest_info = signed.target(updater, f"{latest}/{MANIFEST_NAME}")
                updater.download_target(manifest_info, str(bundle / MANIFEST_NAME))
                for name in signed.manifest_files(bundle / MANIFEST_NAME):
                    path = inside(bundle, safe_file_name(name))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    updater.download_target(signed.target(updater, f"{latest}/{name}"), str(path))
            except tuf_errors.DownloadError as exc:
                raise CloudUnavailable(
                    f"{self.base_url}/tuf/: the cloud service is unavailable "
                    f"({type(exc).__name__}: {exc}); keep serving offline"
                ) from None
            except tuf_errors.RepositoryError as exc:
                raise signed.UntrustedBundle(
                    f"{self.base_url}/tuf: a file does not match its signed metadata "
                    f"({type(exc).__name__}: {exc}); the active bundle stays"
                ) from None
            return registry.install(bundle).version

    def _refresh(self, active: InstalledBundle, store: HistoryStore, report: SyncReport) -> None:
        version = active.manifest.embedding_version
        info = self.version()
        if info.embedding_version != version:
            report.skipped = (
                f"the service's embedding version {info.embedding_version!r} is not the active "
                f"bundle's {version!r}; install the service's bundle to refresh vectors"
            )
            return
        if store.embedding_version != version:
            store.set_embedding_version(version)
        usable = set(active.manifest.source_names) & set(info.sources)
        stale: dict[str, list[str]] = {}
        for source, item_id in store.stale_items(version):
            if source in usable:
                stale.setdefault(source, []).append(item_id)
        if not stale:
            return
        if not all(info.vector_buckets.get(s, 0) >= 1 for s in stale) or info.max_buckets < 1:
            report.skipped = (
                "the service offers no anonymity buckets for every source (POST /v1/vectors/buckets); "
                "vectors were not refreshed, so that no request names the items of this history"
            )
            return
        answer = self.fetch_bucket_vectors(stale, info)
        if answer.embedding_version != version:
            report.skipped = f"the service moved to embedding version {answer.embedding_version!r}; sync again"
            return
        for entry in answer.sources:
            wanted = set(stale.get(entry.source, ()))
            items = [(item.item_id, item.vector) for item in entry.items if item.item_id in wanted]
            if items:
                report.refreshed += store.cache_items(entry.source, items, version)
        report.unknown = [(s, i) for s, ids in answer.unknown.items() for i in ids]

    # -- HTTP --------------------------------------------------------------------------------------
    @overload
    def _get(self, path: str, model: type[Message]) -> Message: ...
    @overload
    def _get(self, path: str, model: None) -> object: ...
    def _get(self, path: str, model: type[Message] | None) -> Message | object:
        return self._call("GET", path, model)

    @overload
    def _call(
        self, method: str, path: str, model: type[Message], body: bytes | None = None, headers: Headers | None = None
    ) -> Message: ...
    @overload
    def _call(
        self, method: str, path: str, model: None, body: bytes | None = None, headers: Headers | None = None
    ) -> object: ...
    def _call(
        self,
        method: str,
        path: str,
        model: type[Message] | None,
        body: bytes | None = None,
        headers: Headers | None = None,
    ) -> Message | object:
        url = self.base_url + path
        with self._open(method, url, body, headers) as response:
            raw, kind = response.read(), response.headers.get("Content-Type")
        try:
            if model is None:
                answer: object = json.loads(raw)
                return answer
            return model.model_validate_json(raw, context=wire_context(wire_form(kind)))
        except (ValueError, ValidationError) as exc:
            raise CloudUnavailable(
                f"{method} {url}: the answer is not a valid {model.__name__ if model else 'JSON'} ({_first_line(exc)})"
            ) from None

    @contextmanager
    def _open(
        self, method: str, url: str, body: bytes | None = None, headers: Headers | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                yield response
        except urllib.error.HTTPError as exc:
            raise CloudUnavailable(f"{method} {url}: HTTP {exc.code}: {_detail(exc)}", exc.code) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, not HTTP
            raise CloudUnavailable(
                f"{method} {url}: the cloud service is unavailable ({type(exc).__name__}: {exc}); keep serving offline"
            ) from None

    def _download(self, item: BundleFileEntry, target: Path) -> None:
        """Fetch one file into `target`, resuming a shorter partial copy with Range + If-Range."""
        if not item.url.startswith("/") or item.url.startswith("//") or "\\" in item.url:
            raise CloudUnavailable(
                f"the bundle listing gives {item.path!r} the URL {item.url!r}; only a path on "
                f"{self.base_url} is accepted"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            raise CloudUnavailable(f"{target} is a symbolic link; refusing to write through it")
        have = target.stat().st_size if target.exists() else 0
        if have == item.size and file_sha256(target) == item.sha256:
            return
        if have >= item.size:
            target.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{item.sha256}"'} if have else {}
        url = self.base_url + item.url
        with self._open("GET", url, headers=headers) as response:
            resumed = have and response.status == 206
            if resumed:
                log.info("resuming %s at byte %d of %d", item.path, have, item.size)
            with open(target, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
        size, digest = target.stat().st_size, file_sha256(target)
        if (size, digest) != (item.size, item.sha256):
            target.unlink()
            raise CloudUnavailable(
                f"GET {url}: got {size} bytes with sha256 {digest}, the listing says {item.size} "
                f"bytes with {item.sha256}; the copy was discarded, download again"
            )


def _is_newer(manifest_sha256: str, created_at: str, active: InstalledBundle | None) -> bool:
    """True when the bundle of `manifest_sha256` is another than the active one and was created after it."""
    if active is None:
        return True
    if file_sha256(active.path / MANIFEST_NAME) == manifest_sha256:
        return False
    return _when(created_at) > _when(active.manifest.created_at)


def _when(stamp: str) -> datetime:
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def safe_version(version: str) -> str:
    """`version` when it is a plain name (SAFE_NAME), else CloudUnavailable: it is never used as a path."""
    if not isinstance(version, str) or not SAFE_NAME.fullmatch(version):
        raise CloudUnavailable(
            f"the service names the bundle version {version!r}; a version is 1-128 letters, "
            "digits, '.', '_' or '-' starting with a letter or digit; refusing it"
        )
    return version


def safe_file_name(name: str) -> PurePosixPath:
    """`name` as a relative path of 1..MAX_FILE_PARTS plain components (SAFE_NAME), else CloudUnavailable."""
    if not plain_path(name):
        raise CloudUnavailable(
            f"the bundle listing names the unsafe file path {name!r}; a file path is at most "
            f"{MAX_FILE_PARTS} '/'-separated plain names (letters, digits, '.', '_', '-'); "
            "refusing it"
        )
    return PurePosixPath(name)


def inside(folder: Path, relative: PurePosixPath) -> Path:
    """`folder / relative` after checking that, with every link resolved, it stays inside `folder`."""
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CloudUnavailable(f"{path} resolves to {path.resolve()}, outside {folder}; refusing to write there")
    return path


@contextmanager
def private_folder(root: Path) -> Iterator[Path]:
    """A fresh folder only this user can read (mode 0700) under `root/downloads`, removed afterwards.

    Its name is chosen here, never by the network; leftovers of a killed process are removed first.
    """
    downloads = root / DOWNLOADS
    downloads.mkdir(parents=True, exist_ok=True)
    if downloads.is_symlink() or not downloads.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{downloads} leads outside the registry {root}; remove it")
    for stale in downloads.glob(".download-*"):  # a killed sync's; a running one touches its files often
        if stale.is_dir() and not stale.is_symlink() and time.time() - stale.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _detail(error: urllib.error.HTTPError) -> str:
    """The server's JSON `detail`, else the start of its body, else the status reason."""
    try:
        raw = error.read()
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        detail = json.loads(raw)["detail"]
    except (ValueError, KeyError, TypeError):
        detail = raw.decode(errors="replace").strip()[:300] or str(error.reason)
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
