"""What every mdgru-bids command shares: argument errors as exit 64, and one-line errors
(the errors and codes themselves live in :mod:`mdgru_bids.errors`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from mdgru_bids.errors import EXIT_PROCESSING, EXIT_USAGE, AppError


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit with the BIDS-Apps usage code (64) instead of 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def run_command(
    prog: str, body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """Run a command body; an AppError becomes one line on stderr and its exit code, and so
    does an OSError, which the machine, not the app, causes (a full disk, a permission, a lost
    mount): exit 1, with the traceback only in the -v log."""
    try:
        return body(argv)
    except AppError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.code
    except OSError as err:
        logging.getLogger("mdgru_bids").debug("%s failed", prog, exc_info=True)
        where = f": {err.filename}" if err.filename else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_PROCESSING


def configure_logging(verbose: bool) -> None:
    """Time-stamped log lines on stderr: INFO, or DEBUG with -v."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
