"""`dir-cloud`: the cloud trainer's command line.

Each subcommand lives in its own module under `cloud.commands` with `add_arguments(parser)` and
`run(args) -> int`; the module's docstring is the command's help. Modules are imported lazily by
name so `--help` stays fast and a missing optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from importlib import metadata

from shared_schema.cli import HelpFormatter, add_completion, add_deprecated_alias, add_version

COMMANDS = {
    "synth": "cloud.commands.synth",
    "prepare": "cloud.commands.prepare",
    "movielens": "cloud.commands.movielens",
    "stats": "cloud.commands.stats",
    "train": "cloud.commands.train",
    "evaluate": "cloud.commands.evaluate",
    "benchmark": "cloud.commands.benchmark",
    "results": "cloud.commands.results",
    "tune": "cloud.commands.tune",
    "tradeoff": "cloud.commands.tradeoff",
    "slate": "cloud.commands.slate",
    "export": "cloud.commands.export",
    "repo": "cloud.commands.repo",
    "simulate": "cloud.commands.simulate",
    "serve": "cloud.commands.serve",
    "vectors": "cloud.commands.vectors",
    "schemas": "cloud.commands.schemas",
}

# Old flag spellings that keep working (hidden from --help): command -> {old: new}.
DEPRECATED_FLAGS = {"serve": {"--torch-threads": "--threads"}}


def build_parser(
    commands: dict[str, str] = COMMANDS, prog: str = "dir-cloud", doc: str = ""
) -> argparse.ArgumentParser:
    """A parser with one subcommand per module in `commands`."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc or __doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        cmd = sub.add_parser(
            name, help=summary, description=(module.__doc__ or "").strip(), formatter_class=HelpFormatter
        )
        module.add_arguments(cmd)
        for old, new in DEPRECATED_FLAGS.get(name, {}).items():
            add_deprecated_alias(cmd, old, new)
        cmd.set_defaults(_run=module.run)
    add_completion(sub, parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, "dir-cloud")
    try:
        return int(args._run(args) or 0)
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, f"dir-cloud {args.command}")
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"dir-cloud {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _missing_extra(exc: ModuleNotFoundError, where: str) -> int:
    """Name the extra that provides a missing third-party module (e.g. torch in a device-only install)."""
    module = (exc.name or "").split(".")[0]
    if not module or module in ("cloud", "device_runtime", "shared_schema"):
        raise exc
    extra = extra_providing(module) or "all"
    print(
        f"{where}: error: the Python module {module!r} is not installed; the cloud trainer needs the "
        f"`{extra}` extra: pip install 'dir-rerank[{extra}]' (from a checkout: pip install '.[{extra}]'). "
        "A device-only install (device-tflite) has `dir-device` instead.",
        file=sys.stderr,
    )
    return 2


def extra_providing(module: str) -> str | None:
    """The extra of this package whose requirements install `module` (cloud preferred), from its metadata."""
    try:
        requirements = metadata.requires("dir-rerank") or []
    except metadata.PackageNotFoundError:
        return None
    extras = []
    for requirement in requirements:
        found = re.match(r"([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if found and re.sub(r"[-.]", "_", found[1]).lower() == module.lower():
            extras.append(found[2])
    return "cloud" if "cloud" in extras else (extras[0] if extras else None)


if __name__ == "__main__":
    sys.exit(main())
