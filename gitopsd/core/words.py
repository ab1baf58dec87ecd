"""Counts in words, for log lines and command output: `1 repository`, `2 repositories` (never `1 repositories`)."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`1 repository`, `2 repositories`, `1 batch`, `3 hosts`."""
    if n == 1:
        return f"{n} {word}"
    if word.endswith("y"):
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"
