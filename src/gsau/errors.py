"""Errors a user can act on. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


class GsauError(Exception):
    """Base class for every error gsau reports to a user."""


class DataError(GsauError):
    """A problem with an input file, located by file and (where there is one) line number."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(GsauError):
    """An unknown preset, option or value."""


class GsauWarning(UserWarning):
    """Base class of gsau's warnings: `warnings.simplefilter("ignore", GsauWarning)` silences them."""


class CollapseWarning(GsauWarning):
    """An epoch's uniformity says the embeddings have collapsed (ranking is then near random)."""


class PerformanceWarning(GsauWarning):
    """A setting of the environment makes training markedly slower."""
