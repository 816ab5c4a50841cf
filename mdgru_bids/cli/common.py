"""What every mdgru-bids command shares: BIDS-Apps exit codes and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

# BIDS-Apps execution specification.
EXIT_OK = 0
EXIT_PROCESSING = 1
EXIT_INVALID_BIDS = 16
EXIT_UNKNOWN_LEVEL = 17
EXIT_NOTHING_SELECTED = 18
EXIT_USAGE = 64
EXIT_BAD_DATA = 65
EXIT_MISSING_INPUT = 66


class AppError(Exception):
    """An error the user can fix: printed as one line, exits with ``code``."""

    code = EXIT_PROCESSING


class UsageError(AppError):
    code = EXIT_USAGE


class BadDataError(AppError):
    code = EXIT_BAD_DATA


class MissingInputError(AppError):
    code = EXIT_MISSING_INPUT


class InvalidBIDSError(AppError):
    code = EXIT_INVALID_BIDS


class NothingSelectedError(AppError):
    code = EXIT_NOTHING_SELECTED


class UnknownLevelError(AppError):
    code = EXIT_UNKNOWN_LEVEL


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
