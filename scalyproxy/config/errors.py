"""Config errors: every problem of a file, each naming its line and key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    line: int | None  # 1-based; None when the problem has no place in the file
    path: str  # dotted key path, e.g. "collections.blog.posts.indexes.0.fields"
    message: str  # what is wrong, then the fix in parentheses

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path or '<top>'}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` lists every problem, one per line."""

    def __init__(self, issues: Iterable[ConfigIssue], source: str = "<string>") -> None:
        self.issues: list[ConfigIssue] = sorted(issues, key=lambda i: (i.line or 0, i.path))
        self.source = source
        super().__init__("\n".join(i.format(source) for i in self.issues))
