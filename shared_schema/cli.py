"""Command-line conventions shared by `dir-cloud` and `dir-device`.

    parser = argparse.ArgumentParser(prog="dir-x", formatter_class=HelpFormatter)
    add_version(parser)                                   # --version
    add_deprecated_alias(sub, "--torch-threads", "--threads")   # old spelling still works, hidden
    add_completion(subparsers, parser)                    # `dir-x completion bash` (shtab)

Every option's help shows its default: HelpFormatter appends "(default: X)" unless the help already
says what the default is (e.g. "default: the run's").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

SHELLS = ("bash", "zsh", "tcsh")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and shows the default of every option that takes a value."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


def package_version() -> str:
    try:
        return version("dir-rerank")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()}", help="print the version and exit"
    )


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept `old` as a hidden spelling of the existing option `new` (same value, a note on stderr)."""
    target = next(a for a in parser._actions if new in a.option_strings)
    parser.add_argument(
        old,
        dest=target.dest,
        type=target.type,  # type: ignore[arg-type]  # argparse takes None (no conversion); typeshed does not say so
        choices=target.choices,
        new=new,
        action=_DeprecatedAlias,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_completion(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """A `completion SHELL` subcommand printing the shell completion script of `root` (shtab)."""
    prog = root.prog
    cmd = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        formatter_class=HelpFormatter,
        description=f"Print a shell completion script, e.g.\n\n    {prog} completion bash "
        f"> ~/.local/share/bash-completion/completions/{prog}",
    )
    cmd.add_argument("shell", choices=SHELLS, help="shell to complete for")
    cmd.set_defaults(_run=lambda args: _print_completion(root, args.shell))
    return cmd


def _print_completion(root: argparse.ArgumentParser, shell: str) -> None:
    import shtab

    print(shtab.complete(root, shell=shell))
