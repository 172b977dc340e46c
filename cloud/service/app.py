"""The FastAPI app: slates, item vectors, model bundles, health (DESIGN section 8; docs/service.md).

    app = create_app(CloudService.load("out/run"), BundleFolder("bundles"))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # or `dir-cloud serve ...`

Every error is JSON `{"detail": ...}`: 404 names what is missing and how to list what exists, 413 for
bodies or id lists over the caps, 422 for invalid input, and 500 with an error id (never a traceback)
for anything unexpected. No endpoint accepts user behaviour.
"""


import logging
import uuid
from urllib.parse import quote
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from cloud.service.bundles import Bundle, BundleFolder
from cloud.service.middleware import BodyLimit, ServerTiming
from cloud.service.state import CloudService, UnknownUser
from shared_schema import CandidateSlate
from shared_schema.messages import COMPACT, COMPACT_MEDIA_TYPE
from shared_schema.manifest import MANIFEST_NAME
from shared_schema.service import (
    BundleEntry,
    BundleFileEntry,
    BundleList,
    ItemVectors,
    ListSlate,
    ServiceInfo,
    VectorRequest,
)

MAX_BODY_BYTES = 1 << 20
log = logging.getLogger(__name__)


class UserList(BaseModel):
    total: int
    offset: int
    users: list[str]


def create_app(service: CloudService, bundles: BundleFolder, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The service's routes over `service` (slates, vectors) and `bundles` (downloads)."""
    app = FastAPI(title="dir-rerank cloud service", version=service.info().package_version,
                  description="Candidate slates with item vectors, item vector refresh and model bundles for "
                              "on-device reranking. Behaviour stays on the device: no endpoint accepts it.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ServerTiming)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("%s %s failed (error id %s): %s: %s", request.method, request.url.path, error_id,
                  type(exc).__name__, exc)
        return JSONResponse({"detail": f"internal server error (error id {error_id}); the service log has the cause"},
                            status_code=500)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness: answers as soon as the model and data are loaded."""
        return {"status": "ok"}

    @app.get("/version", tags=["service"])
    def version() -> ServiceInfo:
        """Package, schema and embedding versions, the model name, sources and limits."""
        return service.info()

    @app.get("/v1/users", tags=["slates"])
    def users(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UserList:
        """User ids the service can build slates for, in data order."""
        return UserList(total=len(service.users), offset=offset, users=service.users[offset:offset + limit])

    # async: about a millisecond of CPU per slate; on the event loop it skips two thread hand-offs that
    # cost more than the work under load (benchmarks/service_load.py, docs/service.md)
    @app.get("/v1/users/{user_id:path}/slate", tags=["slates"], response_model=CandidateSlate,
             responses={200: {"content": {COMPACT_MEDIA_TYPE: {}}}})
    async def user_slate(user_id: str, request: Request,
                   n: Annotated[int | None, Query(ge=1, le=service.spec.n, description="candidates per source")] = None
                   ) -> Response:
        """Upstream top-n candidates per source for the user, each with its vector (docs/service.md).

        Vectors are JSON numbers, or base64 little-endian float32 strings when the request accepts
        `application/vnd.dir-rerank.compact+json`. Server-Timing: `upstream` (candidate ranking), `encode`
        (item vectors), `handler` (both + building the slate), `app` (everything in the app, serialization
        included).
        """
        try:
            slate, timings = service.user_slate(user_id, n)
        except UnknownUser:
            raise HTTPException(404, f"user {user_id!r} is not known to this service; list the users with "
                                     "GET /v1/users?offset=0&limit=100") from None
        return _negotiated(slate, request, {"Server-Timing": ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())})

    @app.get("/v1/lists/{split}/{row}", tags=["slates"])
    def list_slate(split: Literal["train", "valid", "test"], row: Annotated[int, Path(ge=0)]) -> ListSlate:
        """A prepared list of the data as a slate, with the device-view history the model saw (replays)."""
        try:
            return service.list_slate(split, row)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/v1/vectors", tags=["vectors"], response_model=ItemVectors,
              responses={200: {"content": {COMPACT_MEDIA_TYPE: {}}}})
    def vectors(request: VectorRequest, http: Request) -> Response:
        """Current vectors of item ids per source (refreshes device history after an embedding change).

        Unknown ids are listed in `unknown`; unknown sources are a 422; more than `max_vector_ids`
        ids (GET /version) in one request is a 413. Vectors are compact as for slates when accepted.
        """
        count = sum(len(ids) for ids in request.ids.values())
        if count > service.max_vector_ids:
            raise HTTPException(413, f"{count} item ids in one request; send at most {service.max_vector_ids} "
                                     "per request (split the list)")
        try:
            answer = service.vectors(request.ids)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return _negotiated(answer, http)

    @app.get("/v1/bundles", tags=["bundles"])
    def list_bundles() -> BundleList:
        """Every intact bundle in the bundles folder, newest created_at first, with file sha256s."""
        found = bundles.scan()
        return BundleList(latest=found[0].version if found else None, bundles=[_entry(b) for b in found])

    @app.get("/v1/bundles/{version}", tags=["bundles"])
    def bundle(version: str) -> BundleEntry:
        """One bundle's entry; `latest` names the newest."""
        return _entry(_bundle(bundles, version))

    @app.get("/v1/bundles/{version}/files/{name:path}", tags=["bundles"],
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"},
                        304: {"description": "not modified (If-None-Match)"}})
    def bundle_file(version: str, name: str, request: Request) -> Response:
        """A bundle file (manifest.json or a model file). ETag and X-Content-SHA256 carry its sha256;
        If-None-Match gives 304 and Range (with If-Range) resumes a download."""
        found = _bundle(bundles, version)
        if name not in found.files:
            raise HTTPException(404, f"bundle {found.version!r} has no file {name!r}; its files: {list(found.files)}")
        served = found.files[name]
        etag = f'"{served.sha256}"'
        headers = {"ETag": etag, "X-Content-SHA256": served.sha256, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        media = "application/json" if name == MANIFEST_NAME else "application/octet-stream"
        return FileResponse(served.path, media_type=media, headers=headers)

    return app


def _negotiated(message: BaseModel, request: Request, headers: dict[str, str] | None = None) -> Response:
    """`message` as JSON: its vectors base64 float32 when the request's Accept names the compact type,
    JSON numbers otherwise (curl, older clients)."""
    compact = COMPACT_MEDIA_TYPE in request.headers.get("accept", "")
    body = message.model_dump_json(context=COMPACT) if compact else message.model_dump_json()
    return Response(body, media_type=COMPACT_MEDIA_TYPE if compact else "application/json",
                    headers={**(headers or {}), "Vary": "Accept"})


def _bundle(bundles: BundleFolder, version: str) -> Bundle:
    try:
        return bundles.get(version)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from None


def _entry(bundle: Bundle) -> BundleEntry:
    m = bundle.manifest
    return BundleEntry(
        version=bundle.version, model_name=m.model_name, model_version=m.model_version, created_at=m.created_at,
        embedding_version=m.embedding_version, manifest_sha256=bundle.files[MANIFEST_NAME].sha256,
        files=[BundleFileEntry(path=name, sha256=f.sha256, size=f.size,
                               url=f"/v1/bundles/{quote(bundle.version)}/files/{quote(name)}")
               for name, f in bundle.files.items()],
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
