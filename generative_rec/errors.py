"""Errors that carry enough context for a user to fix their input."""

from __future__ import annotations


class GenRecError(Exception):
    """Base class for errors generative_rec raises on purpose (bad input, bad config)."""


class DataError(GenRecError, ValueError):
    """Malformed input data. The message names the file, the line (1-based) and the problem."""

    def __init__(self, problem: str, path: str | None = None, line: int | None = None):
        self.problem, self.path, self.line = problem, path, line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)


class ConfigError(GenRecError, ValueError):
    """A configuration value that cannot work."""


class UnknownItemError(GenRecError, KeyError):
    """An item id or title that is not in the catalogue."""

    def __init__(self, items):
        self.items = list(items)
        shown = ", ".join(repr(i) for i in self.items[:5])
        more = f" (and {len(self.items) - 5} more)" if len(self.items) > 5 else ""
        super().__init__(f"unknown item(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]
