"""`dir-cloud`: the cloud trainer's command line.

Each subcommand lives in its own module under `cloud.commands` with `add_arguments(parser)` and
`run(args) -> int`; the module's docstring is the command's help. Modules are imported lazily by
name so `--help` stays fast and a missing optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    "simulate": "cloud.commands.simulate",
    "serve": "cloud.commands.serve",
}


def build_parser(commands: dict[str, str] = COMMANDS, prog: str = "dir-cloud", doc: str = "") -> argparse.ArgumentParser:
    """A parser with one subcommand per module in `commands`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc or __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        cmd = sub.add_parser(name, help=summary, description=(module.__doc__ or "").strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"dir-cloud {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
