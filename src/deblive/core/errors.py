"""Errors fit for the user, and the exit statuses they end the run with."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """How a deblive command ends; 128 + the signal number when interrupted."""

    OK = 0
    FAILED = 1  # a build, boot or check failed
    BAD_INPUT = 2  # config, arguments, files or mirror: found before anything is touched
    SIGINT = 130
    SIGTERM = 143


class DebliveError(Exception):
    """An error with a message fit for the user; exit_code says how the CLI ends."""

    exit_code: int = ExitCode.FAILED


class BadInputError(DebliveError):
    """Bad input (a config, an argument, a file, a mirror): exit status 2."""

    exit_code = ExitCode.BAD_INPUT
