"""``python -m forksafe_logging demo | doctor``: one parser, a subcommand per module."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from forksafe_logging import _demo, _doctor_command


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forksafe_logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo.add_command(commands)
    _doctor_command.add_command(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status
