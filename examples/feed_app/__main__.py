"""Start the demo feed: `python -m examples.feed_app --slates POOL --bundle BUNDLE [--server URL]`.

Serves the page on http://127.0.0.1:8765/ (loopback only by default) until Ctrl-C. Offline, slates come
from the POOL folder; with --server, from `dir-cloud serve` (bundles too), falling back to POOL while
the server is unreachable. See examples/README.md.
"""

from __future__ import annotations

import argparse
import sys

from device_runtime.backends import BACKENDS
from device_runtime.client import CloudClient
from device_runtime.merge import MODES as MERGE_MODES
from examples.feed_app.feed import FeedApp
from examples.feed_app.server import FeedServer
from examples.feed_app.slates import CloudSlates, PoolSlates, read_catalog, read_slate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.feed_app", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--slates",
        required=True,
        help="offline slate pool folder (build_pool or `dir-cloud slate` output); "
        "with --server, the fallback when the server is unreachable",
    )
    parser.add_argument("--server", help="cloud service URL, e.g. http://127.0.0.1:8000 (online mode)")
    parser.add_argument("--user", help="user id asked from the server (default: the pool's first slate's user)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    parser.add_argument("--bundle", help="model bundle (folder or .zip) to install; default: the installed one")
    parser.add_argument(
        "--trust",
        metavar="ROOT.json",
        help="the signing root to trust on first start (the repository's metadata/1.root.json)",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="development only: accept unsigned bundles (logged on every install)",
    )
    parser.add_argument("--home", default="~/.dir-feed", help="app folder: bundles/ and history.db")
    parser.add_argument("--db", help="history store file (default HOME/history.db)")
    parser.add_argument(
        "--backend", default="tflite", choices=["auto", *BACKENDS], help="inference runtime (tflite needs no torch)"
    )
    parser.add_argument("--delegate", default="auto", help="cpu, xnnpack, edgetpu, gpu, a delegate .so, or auto")
    parser.add_argument("--merge", default="controller", choices=list(MERGE_MODES))
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = PoolSlates(args.slates)
        if args.server:
            user = args.user or read_slate(source.files[0]).user_id
            source = CloudSlates(CloudClient(args.server, timeout=args.timeout), user, fallback=source)
        server = FeedServer(
            (args.host, args.port),
            lambda: FeedApp(
                args.home,
                source,
                bundle=args.bundle,
                db=args.db,
                backend=args.backend,
                delegate=args.delegate,
                merge=args.merge,
                threads=args.threads,
                trust=args.trust,
                allow_unsigned=args.allow_unsigned,
                catalog=read_catalog(args.slates),
            ),
            quiet=args.quiet,
        )
    except (OSError, ValueError) as exc:
        print(f"feed_app: error: {exc}", file=sys.stderr)
        return 2
    mode, detail = source.mode()
    print(f"feed app on {server.url} ({mode}: {detail})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
