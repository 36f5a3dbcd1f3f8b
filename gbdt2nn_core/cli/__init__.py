"""The ``gbdt2nn`` command line: ``distill``, ``predict``, ``explain``, ``export`` and ``plugins``.

User mistakes (:class:`~gbdt2nn_core.Gbdt2nnError`, and misused flags) are printed as one line on stderr with
exit code 2 and no traceback; set ``GBDT2NN_DEBUG=1`` to see the traceback anyway. docs/cli.md has the details.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from gbdt2nn_core.errors import Gbdt2nnError

__all__ = ["main"]

#: Each subcommand module exposes ``add_parser(subparsers) -> None`` that sets ``func=run`` on its parser.
_SUBCOMMANDS = ("distill", "experiment", "predict", "explain", "export", "plugins")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a misused flag like any other user mistake: one line, exit code 2.

    argparse's own report (the usage block, then the error) spans several lines; the usage is one
    ``--help`` away, and the line says so. Subcommand parsers inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gbdt2nn: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from importlib import import_module

    from gbdt2nn_core.version import __version__

    parser = _Parser(
        prog="gbdt2nn",
        description="Distil gradient-boosted trees into neural networks that explain themselves like their teacher.",
    )
    parser.add_argument("--version", action="version", version=f"gbdt2nn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        import_module(f"gbdt2nn_core.cli.{name}_cmd").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gbdt2nn`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc hands on to the processes it starts
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if run is None:
        parser.print_help()
        return 2
    from gbdt2nn_core.cli._files import warnings_as_lines

    try:
        with warnings_as_lines():
            return run(args)
    except Gbdt2nnError as exc:
        if os.environ.get("GBDT2NN_DEBUG"):
            raise
        print(f"gbdt2nn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gbdt2nn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: still one line, with the way to see more
        if os.environ.get("GBDT2NN_DEBUG"):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"gbdt2nn: internal error: {type(exc).__name__}: {detail} "
            "(run again with GBDT2NN_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
