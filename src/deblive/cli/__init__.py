"""The command line: parse, run one command, print, end with its exit status.

Exit status (core.errors.ExitCode): 0 success, 1 a failed build or test, 2
bad input (config, arguments, missing files, mirror), 130/143 interrupted by
SIGINT/SIGTERM.
"""

from __future__ import annotations

import sys

from deblive.cli.parser import make_parser
from deblive.core import interrupt
from deblive.core.errors import DebliveError
from deblive.core.interrupt import Interrupted
from deblive.model.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    interrupt.install_handlers()
    try:
        code: int = args.func(args)
        return code
    except Interrupted as exc:
        interrupt.ignore_further()
        print(f"deblive: {exc.describe()}", file=sys.stderr)
        return exc.exit_code
    except (DebliveError, ConfigError) as exc:
        print(f"deblive: error: {exc}", file=sys.stderr)
        return exc.exit_code


__all__ = ["main"]
