"""The metrics totals file beside a SQLite state.db, read and written for /metrics (metrics.py) and `gitopsd doctor`.

Only the daemon writes it, yet what it holds is read as if anyone had: a symlink, a FIFO, a file of gigabytes, JSON
nested past the parser's depth or rows of the wrong shape are refused with one line saying why (the caller adds the
history up again from the store), never followed, read whole or left to fail at each scrape.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

NAME = "metrics-totals.json"
MAX_SIZE = 64 * 1024 * 1024  # bytes: the totals of 1,000 repositories take about 5 MB; a larger file is not ours
KEYS = {"deployments": 4, "rollbacks": 3, "checks": 4, "last_success": 2}  # figure -> labels before its value
HISTOGRAMS = {"durations": 0, "lead_times": 1}  # figure -> its bucket bounds in "buckets"


class Unusable(ValueError):
    """The file cannot be used: the message says why, in a few words."""


def read(path: Path) -> dict[str, Any] | None:
    """The file's JSON, its shape checked; None when there is no file. Raise Unusable (OSError for one not readable)."""
    limit = MAX_SIZE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unusable("it is a symbolic link, which gitopsd does not follow there") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unusable("it is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Unusable(f"it is over {limit} bytes, larger than any totals file gitopsd writes")
    try:
        kept = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Unusable(f"it is not JSON ({type(exc).__name__})") from exc
    return check(kept)


def check(kept: Any) -> dict[str, Any]:
    """`kept` when it has the shape the daemon writes (each row's labels, counts and bucket counts). Raise Unusable."""
    if not isinstance(kept, dict) or not {"upto", "witness", "buckets", "totals"} <= set(kept):
        raise Unusable("it lacks upto, witness, buckets or totals")
    buckets, totals = kept["buckets"], kept["totals"]
    if (
        not (_count(kept["upto"]) and kept["upto"] < 2**63)
        or not isinstance(kept["witness"], list)
        or not isinstance(totals, dict)
    ):
        raise Unusable("its upto, witness or totals is of the wrong type")
    if not (isinstance(buckets, list) and len(buckets) == len(HISTOGRAMS) and all(isinstance(b, list) for b in buckets)):
        raise Unusable("its buckets are not two lists of bounds")
    for name, labels in (*KEYS.items(), *((n, 2) for n in HISTOGRAMS)):
        rows = totals.get(name)
        if not isinstance(rows, list):
            raise Unusable(f"its {name} are not a list")
        for row in rows:
            size = labels + (1 if name in KEYS else 2)
            if not (isinstance(row, list) and len(row) == size and all(isinstance(v, str) for v in row[:labels])):
                raise Unusable(f"a row of its {name} is not {labels} names and a value")
            value_ok = _number(row[-1]) if name == "last_success" else _count(row[-1])
            if name in KEYS and not value_ok:
                raise Unusable(f"a row of its {name} has {row[-1]!r:.40} for a count")
            if name in HISTOGRAMS:
                counts, total = row[-2], row[-1]
                bounds = len(buckets[HISTOGRAMS[name]]) + 1
                if not (isinstance(counts, list) and len(counts) == bounds and all(map(_count, counts)) and _number(total)):
                    raise Unusable(f"a row of its {name} is not {bounds} bucket counts and a sum")
    return kept


def write(path: Path, kept: dict[str, Any]) -> None:
    """Write `kept` in place of the file at once, through a temporary file made anew (a planted symlink is not
    followed). Raise OSError."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(kept))
    os.replace(temp, path)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e300
