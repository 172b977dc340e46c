"""`dir-device`: install model bundles, rerank slates and keep the behaviour history on the device.

Every command works on a bundle registry (--root, default $DIR_DEVICE_HOME or ~/.dir-device) and a
history store (--db, default ROOT/history.db) and prints a readable summary, or JSON with --json. Examples:

    dir-device trust root.json          # once: the signing root (or --allow-unsigned for development)
    dir-device install bundle.zip
    dir-device rerank --slate slate.json --json
    dir-device record --item v3 --source video --action click
    dir-device record --events history.jsonl
    dir-device history --source video --limit 5
    dir-device rollback
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from device_runtime import signed
from device_runtime.backends import DEFAULT_ORDER, BackendError
from device_runtime.bundle import BundleRegistry, InstalledBundle
from device_runtime.merge import MODES as MERGE_MODES
from device_runtime.reranker import Reranker, check_event
from shared_schema import BehaviorEvent, CandidateSlate
from shared_schema.cli import HelpFormatter, add_completion, add_version

if TYPE_CHECKING:
    from device_runtime.store import HistoryStore


def install(args: argparse.Namespace) -> dict[str, object]:
    """Verify a bundle (directory or .zip) and make it the active one.

    Checks the signatures it carries (BUNDLE/tuf/) under the trusted root (`dir-device trust`), the
    manifest's schema version and fields, every file's size and sha256, and that this runtime loads its
    model files; a bad bundle is refused and the active one stays.
    """
    registry = BundleRegistry(args.root)
    return _bundle_json(signed.install(registry, args.bundle), registry)


def trust(args: argparse.Namespace) -> dict[str, object]:
    """Provision the device with the signing root it trusts (ROOT.json: the repository's metadata/1.root.json).

    From then on `install` and sync accept only bundles signed under that root (The Update Framework:
    tampered, expired, replayed or wrongly signed metadata is refused). `--allow-unsigned` instead sets the
    device up for development: unsigned bundles are accepted, with a warning on every install.
    """
    if args.allow_unsigned == bool(args.root_json):
        raise ValueError("give ROOT.json (the repository's root metadata) or --allow-unsigned, not both or neither")
    if args.allow_unsigned:
        print(
            "dir-device trust: WARNING: unsigned bundles are now accepted on this device (development only)",
            file=sys.stderr,
        )
        return signed.allow_unsigned(args.root)
    return signed.trust_root(args.root, args.root_json)


def rollback(args: argparse.Namespace) -> dict[str, object]:
    """Make the previously active bundle active again."""
    registry = BundleRegistry(args.root)
    return _bundle_json(registry.rollback(), registry)


def rerank(args: argparse.Namespace) -> dict[str, object]:
    """Rerank a candidate slate (JSON file, or - for stdin) and print the merged list.

    Reads the newest clicks per source from the history store, runs the active bundle, merges the
    sources under the bundle's target shares (or, for a bundle with a list decoder, builds the list with
    it: beam_search, slot_policy, contrastive) and records the exposures of the top K.
    """
    text = sys.stdin.read() if args.slate == "-" else _read(Path(args.slate), "slate")
    try:
        slate = CandidateSlate.model_validate_json(text)
    except ValueError as exc:
        raise ValueError(f"{args.slate}: not a valid candidate slate: {exc}") from exc
    with _open(args) as reranker:
        return reranker.rerank(slate).model_dump()


def record(args: argparse.Namespace) -> dict[str, object]:
    """Record a behaviour (click or impression) of an item in the history store.

    One behaviour from --item/--source/--action, or many from --events FILE (JSON lines of
    BehaviorEvent, vectors included, as `dir-cloud slate` writes them), stored in one transaction.
    """
    bundle = _active(args.root)
    if args.events:
        events = _read_events(args.events)
    elif args.item and args.source:
        events = [
            BehaviorEvent(
                item_id=args.item,
                source=args.source,
                action=args.action,
                ts=time.time() if args.ts is None else args.ts,
            )
        ]
    else:
        raise ValueError("give --item and --source for one behaviour, or --events FILE for many")
    for i, event in enumerate(events):
        try:
            check_event(bundle.manifest, event)
        except ValueError as exc:
            raise ValueError(f"{args.events}, line {i + 1}: {exc}" if args.events else str(exc)) from None
    with _store(args, bundle) as store:
        ids = store.record_many(events)
        unused = store.without_vector([(e.source, e.item_id) for e in events if e.action == "click"])
    out: dict[str, object] = (
        {"recorded": 1, "id": ids[0], **events[0].model_dump(exclude={"vector"})}
        if len(events) == 1
        else {"recorded": len(ids), "sources": sorted({e.source for e in events})}
    )
    if unused:
        out["not_in_history"] = {
            "items": [{"source": s, "item_id": i} for s, i in unused[:20]],
            "count": len(unused),
            "why": "no vector of these items is cached under the active embedding version: the clicks are stored "
            "but count as history only once a slate or an event with the item's vector caches it "
            "(record it with its vector, e.g. --events with a `vector` field)",
        }
    return out


def _read_events(path: str) -> list[BehaviorEvent]:
    events = []
    for number, line in enumerate(_read(Path(path), "events").splitlines(), start=1):
        if line.strip():
            try:
                events.append(BehaviorEvent.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: not a BehaviorEvent: {exc}") from None
    return events


def history(args: argparse.Namespace) -> dict[str, object]:
    """List the newest behaviours in the history store, newest first."""
    bundle = _active(args.root)
    if args.source is not None and args.source not in bundle.manifest.source_names:
        raise ValueError(f"--source {args.source!r} is not a source of the bundle: {bundle.manifest.source_names}")
    with _store(args, bundle) as store:
        where = "WHERE source = ?" if args.source else ""
        rows = store.db.conn.execute(
            f"SELECT ts, item_id, source, action FROM behaviors {where} ORDER BY ts DESC, id DESC LIMIT ?",
            ([args.source] if args.source else []) + [args.limit],
        )
        return {"behaviors": [dict(zip(("ts", "item_id", "source", "action"), row)) for row in rows]}


def info(args: argparse.Namespace) -> dict[str, object]:
    """Show the active bundle, its list decoder, the backend and delegate that run it (and why others did not),
    store stats."""
    with _open(args) as reranker:
        registry = BundleRegistry(args.root)
        return {**reranker.info(), "root": str(registry.root), "previous": registry.previous()}


COMMANDS = {
    "trust": trust,
    "install": install,
    "rollback": rollback,
    "rerank": rerank,
    "record": record,
    "history": history,
    "info": info,
}


def build_parser() -> argparse.ArgumentParser:
    """The `dir-device` parser: one subcommand per entry of COMMANDS, each with --root and --db."""
    default_root = os.environ.get("DIR_DEVICE_HOME", str(Path.home() / ".dir-device"))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        default=default_root,
        help="bundle registry folder (default: $DIR_DEVICE_HOME or ~/.dir-device; now %(default)s)",
    )
    common.add_argument("--db", default=None, help="history store SQLite file (default: ROOT/history.db)")
    common.add_argument("--json", action="store_true", help="print the reply as JSON instead of a summary")
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "tflite", "executorch"],
        help="inference runtime (default: auto, the first of --order that runs)",
    )
    runtime.add_argument(
        "--delegate",
        default="auto",
        help="cpu, xnnpack, portable, an NPU/GPU delegate name (edgetpu, armnn, qnn, gpu) "
        "or a TFLite delegate library path (default: auto)",
    )
    runtime.add_argument("--threads", type=int, default=1, help="CPU threads for inference")
    runtime.add_argument(
        "--order",
        default=",".join(DEFAULT_ORDER),
        help="comma-separated BACKEND:DELEGATE pairs that auto tries (default: %(default)s)",
    )
    runtime.add_argument(
        "--quantization",
        default=None,
        help="use only model files of this quantization, e.g. int8 (default: fp32 first)",
    )
    runtime.add_argument(
        "--merge",
        default=None,
        choices=MERGE_MODES,
        help="score: model order; quota: per-source top-K slots from the target shares; "
        "controller: steer toward the target using exposures already shown "
        "(default: controller; score for a bundle with a list decoder: SVR, HRL, NAR4Rec "
        "build their own list)",
    )

    parser = argparse.ArgumentParser(prog="dir-device", description=__doc__, formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, fn in COMMANDS.items():
        parents = [common, runtime] if name in ("rerank", "info") else [common]
        doc = inspect.cleandoc(fn.__doc__ or "")
        parsers[name] = sub.add_parser(
            name, parents=parents, help=doc.splitlines()[0], description=doc, formatter_class=HelpFormatter
        )
        parsers[name].set_defaults(_run=fn)
    add_completion(sub, parser)
    parsers["install"].add_argument("bundle", metavar="BUNDLE", help="bundle directory or .zip")
    parsers["trust"].add_argument(
        "root_json", metavar="ROOT.json", nargs="?", help="the signed repository's root metadata (metadata/1.root.json)"
    )
    parsers["trust"].add_argument(
        "--allow-unsigned",
        action="store_true",
        help="development only: accept unsigned bundles (logged on every install)",
    )
    parsers["rerank"].add_argument("--slate", required=True, metavar="FILE", help="CandidateSlate JSON file, or -")
    parsers["record"].add_argument("--item", help="item id of one behaviour (default: none; or give --events)")
    parsers["record"].add_argument("--source", help="source of the item, a source of the bundle (default: none)")
    parsers["record"].add_argument(
        "--events", metavar="FILE", help="JSON lines of BehaviorEvent to record at once (default: none)"
    )
    parsers["record"].add_argument(
        "--action", default="click", choices=["click", "impression"], help="kind of behaviour"
    )
    parsers["record"].add_argument("--ts", type=float, default=None, help="unix time in seconds (default: now)")
    parsers["history"].add_argument("--source", default=None, help="only this source (default: every source)")
    parsers["history"].add_argument("--limit", type=_positive, default=20, help="how many, >= 1 (default: 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "db", "") is None:
        args.db = str(Path(args.root).expanduser() / "history.db")
    try:
        out = args._run(args)
    except (ValueError, FileNotFoundError, BackendError, ImportError) as exc:
        print(f"dir-device {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if out is not None:  # `completion` prints its own script
        print(json.dumps(out, indent=2) if args.json else render(out))
    return 0


def render(reply: dict[str, object], indent: str = "") -> str:
    """A command's reply for people: `key: value` lines, nested sections indented, lists of records as tables."""
    lines = []
    for key, value in reply.items():
        if isinstance(value, dict) and value:
            lines += [f"{indent}{key}:", render(value, indent + "  ")]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += [f"{indent}{key}:", _table(value, indent + "  ")]
        elif isinstance(value, float):
            lines.append(f"{indent}{key}: {value:.4g}")
        elif isinstance(value, (list, dict)):
            lines.append(f"{indent}{key}: {', '.join(map(str, value)) or '-'}")
        else:
            lines.append(f"{indent}{key}: {'-' if value is None else value}")
    return "\n".join(lines)


def _table(rows: list[dict[str, object]], indent: str) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    return "\n".join(
        indent + "  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [columns, *cells]
    )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "-" if value is None else str(value)


def _open(args: argparse.Namespace) -> Reranker:
    Path(args.db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    order = [o.strip() for o in args.order.split(",") if o.strip()]
    return Reranker.open(
        args.root, args.db, args.backend, args.delegate, args.merge, args.threads, order, args.quantization
    )


def _active(root: str) -> InstalledBundle:
    bundle = BundleRegistry(root).active()
    if bundle is None:
        raise FileNotFoundError(f"{root}: no bundle installed; run `dir-device install BUNDLE --root {root}`")
    return bundle


def _store(args: argparse.Namespace, bundle: InstalledBundle) -> HistoryStore:
    from device_runtime.store import HistoryStore

    Path(args.db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    m = bundle.manifest
    store = HistoryStore(
        Path(args.db).expanduser(), sources=m.source_names, dims=dict(zip(m.source_names, m.vector_dims))
    )
    if store.embedding_version != m.embedding_version:  # as Reranker.open: vectors follow the active bundle
        store.set_embedding_version(m.embedding_version)
    return store


def _bundle_json(bundle: InstalledBundle, registry: BundleRegistry) -> dict[str, object]:
    m = bundle.manifest
    return {
        "active": bundle.version,
        "path": str(bundle.path),
        "model_name": m.model_name,
        "model_version": m.model_version,
        "embedding_version": m.embedding_version,
        "previous": registry.previous(),
    }


def _read(path: Path, what: str) -> str:
    """A UTF-8 text file's content; a clear error for a missing file, a folder or other bytes."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; pass a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the {what} as UTF-8"
        ) from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


if __name__ == "__main__":
    sys.exit(main())
