"""The ``splatdistill`` command line: one entry point, subcommands registered by modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tqdm import tqdm

from splatdistill import __version__
from splatdistill.commands import COMMAND_MODULES
from splatdistill.config import ConfigParser
from splatdistill.errors import UserError
from splatdistill.threads import prepare_openmp


def build_parser() -> argparse.ArgumentParser:
    parser = ConfigParser(
        prog="splatdistill",
        description="Splat-and-Distill: make a ViT's features 3D-aware by distilling splatted "
        "multi-view teacher features into a LoRA student.",
    )
    parser.add_argument("--version", action="version", version=f"splatdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _close_progress_bars() -> None:
    """End every live progress bar, so an error starts on a line of its own instead of after a bar."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    prepare_openmp()  # the command line's short OpenMP spin-waits, before torch loads (never on a plain import)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as exc:  # an unknown --key of a command's config: one line naming the nearest spelling
        words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")][:2]
        command = " ".join(words[:2] if words[:1] == ["lifter"] else words[:1])
        print(f"splatdistill {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, while it can still be handled
        return status
    except UserError as exc:
        _close_progress_bars()
        print(f"splatdistill {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"splatdistill {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (``| head``)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
