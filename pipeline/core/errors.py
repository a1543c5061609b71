"""Error classes and the exit codes they map to (DESIGN.md: 0 ok, 2 usage, 3 bad input, 4 internal)."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a run stopped with Ctrl-C


class LegMRIError(Exception):
    """Base class of every error legmri raises on purpose.

    Each carries the exit code the command line returns for it, and, where one is known, the file that caused it
    and the fix a user can apply.
    """

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message
        if self.path is not None and str(self.path) not in text:
            text = f"{self.path}: {text}"
        if self.fix:
            text = f"{text} Fix: {self.fix}"
        return text


class UsageError(LegMRIError):
    """The command was called wrongly (unknown option, missing argument, conflicting flags)."""

    exit_code = EXIT_USAGE


class BadInputError(LegMRIError):
    """A study, file or configuration cannot be used as given; the message names the file and the fix."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """A configuration file is missing, is not valid YAML, or does not match its schema."""


class BundleError(BadInputError):
    """A model bundle is incomplete, corrupt (sha256 mismatch) or does not match configs/labels.yaml."""


class InternalError(LegMRIError):
    """A bug: an invariant of legmri itself was violated."""

    exit_code = EXIT_INTERNAL
