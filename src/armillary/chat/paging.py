"""Long answers in pages: the first ``PAGE_LINES`` lines now, the rest on ``more``.

Per (connection, account, room): what one person asked for in one place is what their ``more`` continues.
"""

from __future__ import annotations

PAGE_LINES = 8
MAX_LINE = 400  # IRC lines are at most 512 bytes with the prefix; keep a margin


def split_long(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        for part in line.splitlines() or [""]:
            while len(part) > MAX_LINE:
                out.append(part[:MAX_LINE])
                part = part[MAX_LINE:]
            out.append(part)
    return out


class Pager:
    def __init__(self, page_lines: int = PAGE_LINES) -> None:
        self.page_lines = page_lines
        self.rest: dict[tuple[str, str, str], list[str]] = {}

    def first(self, key: tuple[str, str, str], lines: list[str]) -> list[str]:
        """The first page of ``lines``; the rest waits for ``more`` (replacing whatever waited)."""
        lines = split_long(lines)
        if len(lines) <= self.page_lines + 1:
            self.rest.pop(key, None)
            return lines
        self.rest[key] = lines[self.page_lines:]
        return [*lines[: self.page_lines], f"… {len(lines) - self.page_lines} more lines: say 'more'"]

    def more(self, key: tuple[str, str, str]) -> list[str]:
        rest = self.rest.pop(key, None)
        if not rest:
            return ["nothing more"]
        return self.first(key, rest)
