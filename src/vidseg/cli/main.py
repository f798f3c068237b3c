"""Entry point of the ``vidseg`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from rich.text import Text

from vidseg import __version__
from vidseg.cli import ablate, bench, data, demo, evaluate, export_logits, predict, train
from vidseg.cli.common import Parser, suggest_unknown
from vidseg.errors import VidsegError
from vidseg.utils.console import console, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vidseg",
        description="Temporally consistent, semi-supervised video semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"vidseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    data.register(commands)
    train.register(commands)
    evaluate.register(commands)
    predict.register(commands)
    demo.register(commands)
    bench.register(commands)
    export_logits.register(commands)
    ablate.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    command_parser = getattr(args, "parser", parser)
    if unknown:
        command_parser.error(suggest_unknown(command_parser, unknown))
    if not hasattr(args, "run"):
        command_parser.print_help()
        return 2
    setup_logging(
        logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    )
    try:
        return int(args.run(args) or 0)
    except VidsegError as exc:
        console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
