"""`instaseg <command>`: parses arguments, calls the Python API, prints. No logic lives here.

Each command group registers itself from its own module, so commands stay small and independent.
"""

from __future__ import annotations

import argparse
import sys

from instaseg.errors import EXIT_RUN_STOPPED, EXIT_USER_ERROR, RunStopped, UserError, disk_full
from instaseg.version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from instaseg.cli import benchmark, data, demo, evaluate, export, models, predict, serve, train, weights

    parser = _Parser(prog="instaseg", description="Instance segmentation: data, training, evaluation, prediction.")
    parser.add_argument("--version", action="version", version=f"instaseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for module in (data, models, weights, train, evaluate, predict, demo, export, benchmark, serve):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return EXIT_RUN_STOPPED
    except OSError as e:
        if not disk_full(e):
            raise
        # a write that did not go through atomic_write (a copied image, a library's own file)
        print(f"error: {e.filename or 'output'}: no space left on the device (or quota exceeded)", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
