"""The FastAPI app: slates, item vectors, model bundles, health (docs/service.md).

    app = create_app(CloudService.load("out/run"), BundleFolder("bundles"))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # or `dir-cloud serve ...`

Every error is JSON `{"detail": ...}`: 404 names what is missing and how to list what exists, 413 for
bodies or id lists over the caps, 422 for invalid input (each problem's `loc`, `msg` and `type`, never the input
itself: it may not even be JSON, like NaN), and 500 with an error id (never a traceback) for anything
unexpected; the OpenAPI spec declares them per route. Bundle files answer GET and HEAD. /docs and /redoc
work offline. No endpoint accepts user behaviour.
"""

import logging
import math
import uuid
from collections.abc import Sequence
from typing import Annotated, Literal, cast
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud.service.bundles import Bundle, BundleFolder, SignedFiles
from cloud.service.docs import add_offline_docs, errors, only_declared_errors
from cloud.service.middleware import BodyLimit, ServerTiming
from cloud.service.state import MAX_BUCKETS, CloudService, UnknownUser
from shared_schema import CandidateSlate
from shared_schema.manifest import MANIFEST_NAME
from shared_schema.messages import COMPACT_MEDIA_TYPE, WireForm, media_type, wire_context
from shared_schema.service import (
    BucketRequest,
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
    """A page of the user ids the service can build slates for."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"total": 2, "offset": 0, "users": ["u1", "u2"]}]})

    total: int = Field(description="how many users the service knows", examples=[2])
    offset: int = Field(description="index of the first user of this page", examples=[0])
    users: list[str] = Field(description="user ids in data order, at most `limit`", examples=[["u1", "u2"]])


def create_app(
    service: CloudService,
    bundles: BundleFolder,
    max_body_bytes: int = MAX_BODY_BYTES,
    signed: SignedFiles | None = None,
) -> FastAPI:
    """The service's routes over `service` (slates, vectors), `bundles` (downloads) and `signed` (the TUF
    repository devices update from, when given)."""
    app = FastAPI(
        title="dir-rerank cloud service",
        version=service.info().package_version,
        description="Candidate slates with item vectors, item vector refresh and model bundles for "
        "on-device reranking. Behaviour stays on the device: no endpoint accepts it.",
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    only_declared_errors(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ServerTiming)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "%s %s failed (error id %s): %s: %s", request.method, request.url.path, error_id, type(exc).__name__, exc
        )
        return JSONResponse(
            {"detail": f"internal server error (error id {error_id}); the service log has the cause"}, status_code=500
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_problem(err) for err in exc.errors()]}, status_code=422)

    @app.get("/health", tags=["service"], responses=errors())
    def health() -> dict[str, str]:
        """Liveness: answers as soon as the model and data are loaded."""
        return {"status": "ok"}

    @app.get("/version", tags=["service"], responses=errors())
    def version() -> ServiceInfo:
        """Package, schema and embedding versions, the model name, sources and limits."""
        return service.info()

    @app.get("/v1/users", tags=["slates"], responses=errors(422))
    def users(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UserList:
        """User ids the service can build slates for, in data order."""
        return UserList(total=len(service.users), offset=offset, users=service.users[offset : offset + limit])

    # async: about 0.2 ms of CPU per slate; on the event loop it skips two thread hand-offs that
    # cost more than the work under load (benchmarks/service_load.py, docs/service.md)
    @app.get(
        "/v1/users/{user_id:path}/slate",
        tags=["slates"],
        response_model=CandidateSlate,
        responses={200: {"content": {COMPACT_MEDIA_TYPE: {}}}, **errors(404, 422)},
    )
    async def user_slate(
        user_id: str,
        request: Request,
        n: Annotated[int | None, Query(ge=1, le=service.spec.n, description="candidates per source")] = None,
    ) -> Response:
        """Upstream top-n candidates per source for the user, each with its vector (docs/service.md).

        Vectors are JSON numbers, or base64 little-endian float32 strings when the request accepts
        `application/vnd.dir-rerank.compact+json`, float16 strings when it accepts that type with the
        parameter `vectors=float16` (the Content-Type names the form sent). Server-Timing: `upstream`
        (candidate ranking), `encode` (the slate's JSON, item vectors included), `handler` (both), `app`
        (everything in the app).
        """
        form = _wire_form(request, service.wire_forms)
        try:
            body, timings = service.user_slate_json(user_id, n, form)
        except UnknownUser:
            raise HTTPException(
                404,
                f"user {user_id!r} is not known to this service; list the users with GET /v1/users?offset=0&limit=100",
            ) from None
        timing = ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())
        return _json_response(body, form, {"Server-Timing": timing})

    @app.get("/v1/lists/{split}/{row}", tags=["slates"], responses=errors(404, 422))
    def list_slate(split: Literal["train", "valid", "test"], row: Annotated[int, Path(ge=0)]) -> ListSlate:
        """A prepared list of the data as a slate, with the device-view history the model saw (replays)."""
        try:
            return service.list_slate(split, row)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post(
        "/v1/vectors",
        tags=["vectors"],
        response_model=ItemVectors,
        responses={200: {"content": {COMPACT_MEDIA_TYPE: {}}}, **errors(413, 422)},
    )
    def vectors(request: VectorRequest, http: Request) -> Response:
        """Current vectors of item ids per source (refreshes device history after an embedding change).

        Unknown ids are listed in `unknown`; unknown sources are a 422; more than `max_vector_ids`
        ids (GET /version) in one request is a 413. Vectors are compact as for slates when accepted.
        """
        count = sum(len(ids) for ids in request.ids.values())
        if count > service.max_vector_ids:
            raise HTTPException(
                413,
                f"{count} item ids in one request; send at most {service.max_vector_ids} per request (split the list)",
            )
        if any(_text(name) != name or any(_text(i) != i for i in ids) for name, ids in request.ids.items()):
            raise HTTPException(
                422,
                "ids: a source name or item id is not Unicode text (a lone surrogate escape such "
                "as \\ud800); send ids as UTF-8 text",
            )
        try:
            answer = service.vectors(request.ids)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return _negotiated(answer, http, service.wire_forms)

    @app.post(
        "/v1/vectors/buckets",
        tags=["vectors"],
        response_model=ItemVectors,
        responses={200: {"content": {COMPACT_MEDIA_TYPE: {}}}, **errors(413, 422)},
    )
    def bucket_vectors(request: BucketRequest, http: Request) -> Response:
        """Vectors of every item of whole anonymity buckets (GET /version: `vector_buckets`, `min_bucket_items`):
        how the device refreshes its cached vectors without naming the items it holds (docs/service.md).

        More than `max_buckets` buckets in one request is a 413; an unknown source or bucket is a 422.
        """
        count = sum(len(numbers) for numbers in request.buckets.values())
        if count > MAX_BUCKETS:
            raise HTTPException(413, f"{count} buckets in one request; send at most {MAX_BUCKETS} per request")
        try:
            answer = service.bucket_vectors(request.buckets)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return _negotiated(answer, http, service.wire_forms)

    @app.get("/v1/bundles", tags=["bundles"], responses=errors())
    def list_bundles() -> BundleList:
        """Every intact bundle in the bundles folder, newest created_at first, with file sha256s."""
        found = bundles.scan()
        return BundleList(latest=found[0].version if found else None, bundles=[_entry(b) for b in found])

    @app.get("/v1/bundles/{version}", tags=["bundles"], responses=errors(404))
    def bundle(version: str) -> BundleEntry:
        """One bundle's entry; `latest` names the newest."""
        return _entry(_bundle(bundles, version))

    @app.api_route(
        "/v1/bundles/{version}/files/{name:path}",
        methods=["GET", "HEAD"],
        tags=["bundles"],
        responses={
            200: {"content": {"application/octet-stream": {}}},
            206: {"description": "a byte range"},
            304: {"description": "not modified (If-None-Match)"},
            416: {"description": "Range outside the file; Content-Range gives its size", "content": {"text/plain": {}}},
            **errors(404),
        },
    )
    def bundle_file(version: str, name: str, request: Request) -> Response:
        """A bundle file (manifest.json or a model file). ETag and X-Content-SHA256 carry its sha256;
        If-None-Match gives 304 and Range (with If-Range) resumes a download. HEAD gives the headers only."""
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

    @app.get(
        "/tuf/{kind}/{name:path}",
        tags=["bundles"],
        responses={200: {"content": {"application/octet-stream": {}}}, **errors(404)},
    )
    def signed_file(kind: str, name: str) -> Response:
        """The signed repository (The Update Framework): `metadata/N.root.json`, `metadata/timestamp.json`,
        `metadata/N.snapshot.json`, `metadata/N.targets.json` and `targets/VERSION/SHA256.NAME`; what
        `tuf.ngclient.Updater` on the device fetches (`dir-device trust`, docs/device.md)."""
        if signed is None:
            raise HTTPException(
                404, "this service publishes no signed repository; start it with `dir-cloud serve ... --repo REPO`"
            )
        try:
            path = signed.path(kind, name)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None
        return FileResponse(
            path,
            media_type="application/json" if kind == "metadata" else "application/octet-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return app


def _problem(err: dict) -> dict:
    """One validation problem as {loc, msg, type} in plain JSON: the offending input is never echoed."""
    msg = str(err.get("msg", "invalid value"))
    value = err.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        msg += "; NaN and Infinity are not JSON numbers: send valid JSON"
    elif err.get("type") == "json_invalid" and isinstance(err.get("ctx", {}).get("error"), str):
        msg += f" ({err['ctx']['error']}); send valid JSON"
    return {
        "loc": [part if isinstance(part, int) else _text(str(part)) for part in err.get("loc", ())],
        "msg": _text(msg),
        "type": _text(str(err.get("type", ""))),
    }


def _text(value: str) -> str:
    """`value` made encodable as UTF-8 (a lone surrogate from a JSON escape becomes a visible backslash escape)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _wire_form(request: Request, offered: Sequence[WireForm]) -> WireForm:
    """The form of the item vectors that the request's Accept ranks highest (q value) among `offered`: a
    compact form only when named with its media type (`vectors=float16` for float16), JSON numbers for
    anything else (curl, older clients, */*). Of equally ranked forms the smallest body wins."""
    ranks: dict[WireForm, float] = {}
    for part in request.headers.get("accept", "").split(","):
        kind, *params = [p.strip().lower() for p in part.split(";")]
        named = {key.strip(): value.strip() for key, _, value in (p.partition("=") for p in params)}
        try:
            q = float(named.get("q", "1"))
        except ValueError:
            continue
        form = cast(WireForm, named.get("vectors", "float32") if kind == COMPACT_MEDIA_TYPE else "json")
        if kind in (COMPACT_MEDIA_TYPE, "application/json", "application/*", "*/*") and form in offered:
            ranks[form] = max(ranks.get(form, 0.0), q)
    accepted = [form for form in SMALLEST_FIRST if ranks.get(form, 0.0) > 0]
    return max(accepted, key=ranks.__getitem__, default="json")


SMALLEST_FIRST: tuple[WireForm, ...] = ("float16", "float32", "json")


def _negotiated(message: BaseModel, request: Request, offered: Sequence[WireForm]) -> Response:
    """`message` as JSON, its vectors in the form the request accepts."""
    form = _wire_form(request, offered)
    return _json_response(message.model_dump_json(context=wire_context(form)), form)


def _json_response(body: str | bytes, form: WireForm, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type=media_type(form), headers={**(headers or {}), "Vary": "Accept"})


def _bundle(bundles: BundleFolder, version: str) -> Bundle:
    try:
        return bundles.get(version)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from None


def _entry(bundle: Bundle) -> BundleEntry:
    m = bundle.manifest
    return BundleEntry(
        version=bundle.version,
        model_name=m.model_name,
        model_version=m.model_version,
        created_at=m.created_at,
        embedding_version=m.embedding_version,
        manifest_sha256=bundle.files[MANIFEST_NAME].sha256,
        files=[
            BundleFileEntry(
                path=name, sha256=f.sha256, size=f.size, url=f"/v1/bundles/{quote(bundle.version)}/files/{quote(name)}"
            )
            for name, f in bundle.files.items()
        ],
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
