"""The feed's loopback web server (standard library only): the page, its static files and a JSON API.

    server = FeedServer(("127.0.0.1", 8765), lambda: FeedApp(home, PoolSlates(pool), bundle=bundle))
    server.serve_forever()

    GET  /                    the page (static/index.html, app.js, style.css)
    GET  /api/page            the last page shown, unchanged (404 before the first POST): no side effects
    POST /api/page            {"advance": false}: rerank the current slate now and record its exposures;
                              {"advance": true}: the next slate first
    POST /api/click           {"item_id": ..., "source": ...}: record the click (200; 507 if the store is full)

Requests are parsed on the server's threads; every FeedApp call runs on one worker thread, which also
builds the app, because the SQLite connection may only be used by the thread that opened it.
"""

from __future__ import annotations

import json
import traceback
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
MAX_BODY = 64 * 1024


class FeedServer(ThreadingHTTPServer):
    """HTTP server around one FeedApp built by `make_app` on the worker thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], make_app, quiet: bool = False):
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-app")
        self.quiet = quiet
        try:
            self.app = self.worker.submit(make_app).result()
            super().__init__(address, FeedHandler)
        except BaseException:
            self.worker.shutdown()
            raise

    def call(self, fn, *args, **kwargs):
        """Run `fn` on the worker thread and return its result (or raise its exception)."""
        return self.worker.submit(fn, *args, **kwargs).result()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.call(self.app.close)
        self.worker.shutdown()


class FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/api/page":
            if url.query:
                self._json(
                    {"error": 'GET /api/page changes nothing; to rerank or advance, POST /api/page {"advance": true}'},
                    HTTPStatus.METHOD_NOT_ALLOWED,
                )
                return
            page = self.server.call(lambda: self.server.app.last)
            if page is None:
                self._json({"error": "no page shown yet; POST /api/page to rerank one"}, HTTPStatus.NOT_FOUND)
                return
            self._json(page, HTTPStatus.OK if page["backend"] else HTTPStatus.SERVICE_UNAVAILABLE)
            return
        name = "index.html" if url.path == "/" else url.path.removeprefix("/static/")
        path = STATIC / name
        if "/" in name or path.suffix not in CONTENT_TYPES or not path.is_file():
            self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)
            return
        self._send(path.read_bytes(), CONTENT_TYPES[path.suffix], HTTPStatus.OK)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/page":
            self._post_page()
            return
        if path != "/api/click":
            self._json({"error": f"no such endpoint: POST {self.path}"}, HTTPStatus.NOT_FOUND)
            return
        try:
            body = self._body()
            item_id, source = body["item_id"], body["source"]
            if not (isinstance(item_id, str) and isinstance(source, str)):
                raise ValueError("item_id and source must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            self._json(
                {"recorded": False, "error": f'bad click request: {exc!s}; send {{"item_id": "...", "source": "..."}}'},
                HTTPStatus.BAD_REQUEST,
            )
            return
        try:
            result = self.server.call(self.server.app.click, item_id, source)
        except LookupError as exc:
            self._json({"recorded": False, "error": str(exc.args[0])}, HTTPStatus.CONFLICT)
            return
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return
        self._json(result, HTTPStatus.OK if result["recorded"] else HTTPStatus.INSUFFICIENT_STORAGE)

    def _post_page(self) -> None:
        try:
            advance = self._body(empty_ok=True).get("advance", False)
            if not isinstance(advance, bool):
                raise ValueError(f"advance must be true or false, got {advance!r}")
        except (ValueError, TypeError, AttributeError) as exc:
            self._json({"error": f'bad page request: {exc!s}; send {{"advance": false}}'}, HTTPStatus.BAD_REQUEST)
            return
        try:
            page = self.server.call(self.server.app.page, advance)
        except Exception as exc:  # noqa: BLE001  (an unexpected failure answers 500; the server goes on)
            self._failed(exc)
            return
        self._json(page, HTTPStatus.OK if page["backend"] else HTTPStatus.SERVICE_UNAVAILABLE)

    def _body(self, empty_ok: bool = False) -> dict:
        """The request's JSON object body (an empty body is {} when `empty_ok`)."""
        length = int(self.headers.get("Content-Length") or 0)
        if empty_ok and length == 0:
            return {}
        if not 0 < length <= MAX_BODY:
            raise ValueError(f"send a JSON body of 1..{MAX_BODY} bytes (got Content-Length {length})")
        return json.loads(self.rfile.read(length))

    def _failed(self, exc: Exception) -> None:
        traceback.print_exception(exc)
        self._json({"error": f"internal error: {type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _json(self, payload: dict, status: HTTPStatus) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)
