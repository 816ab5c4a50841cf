"""Errors a user can fix and the exit codes they end a command with (BIDS-Apps execution
specification). Every layer raises these; only the command line turns them into a line on
stderr and an exit status."""

from __future__ import annotations

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
