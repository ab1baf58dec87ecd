"""Rolling deployments: batches of hosts, sized like Ansible's `serial`, and when to stop.

A batch spec is a host count (`2`, or `"2"`) or a percentage of all the hosts (`"25%"`, rounded
down but at least one host). The specs are used in order and the last one repeats until every
host is in a batch, so `[1, "25%", "100%"]` is a canary, then a quarter, then everything else.
"""

from __future__ import annotations

import re

_COUNT = re.compile(r"[0-9]+")
_PERCENT = re.compile(r"([0-9]+)%")
EXAMPLE = '[1, "25%", "100%"]'


def validate_batches(raw: object) -> str | None:
    """Given batch specs as read from the configuration, return None when they are usable and
    otherwise a message saying which spec is wrong and why.

    Usable: a non-empty list whose items are positive host counts (an int, or a string of
    digits) or percentages from "1%" to "100%". Raise nothing.
    """
    if not isinstance(raw, list):
        return f"must be a list of batch sizes, e.g. {EXAMPLE}, not {raw!r}"
    if not raw:
        return f"must list at least one batch size, e.g. {EXAMPLE}"
    for index, spec in enumerate(raw, start=1):
        problem = _spec_problem(spec)
        if problem is not None:
            return f"batch {index} ({spec!r}): {problem}"
    return None


def _spec_problem(spec: object) -> str | None:
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        return 'must be a host count like 2 or a percentage like "25%"'
    if isinstance(spec, int):
        return None if spec > 0 else "a host count must be at least 1"
    if _COUNT.fullmatch(spec):
        return None if int(spec) > 0 else "a host count must be at least 1"
    match = _PERCENT.fullmatch(spec)
    if match is None:
        return 'must be a host count like 2 or a whole percentage like "25%"'
    if not 1 <= int(match.group(1)) <= 100:
        return "a percentage must be from 1% to 100%"
    return None


def _size(spec: int | str, total: int) -> int:
    if isinstance(spec, int):
        return spec
    if spec.endswith("%"):
        return max(1, int(spec[:-1]) * total // 100)
    return int(spec)


def split_batches(hosts: list[str], batches: list[int | str]) -> list[list[str]]:
    """Given hosts in order and batch specs, return the hosts cut into consecutive, non-empty
    batches: each spec's size in turn (percentages of all the hosts), the last spec repeating
    until every host is covered; a batch larger than what is left takes what is left.
    An empty host list gives [].

    Raise ValueError for specs that validate_batches refuses.
    """
    problem = validate_batches(batches)
    if problem is not None:
        raise ValueError(f"batches {problem}")
    total = len(hosts)
    result: list[list[str]] = []
    start = 0
    index = 0
    while start < total:
        size = _size(batches[min(index, len(batches) - 1)], total)
        result.append(list(hosts[start : start + size]))
        start += size
        index += 1
    return result


def failed_too_many(failed: int, total: int, max_fail_percentage: float) -> bool:
    """Given how many hosts of a batch failed out of how many, return whether the rollout must
    stop, as Ansible's `max_fail_percentage` decides: more than that percentage failed (so with
    0 any failure stops it, with 100 only a batch where every host failed). A batch in which
    every host failed always stops, as Ansible ends the play then whatever the percentage.

    Raise ValueError for negative numbers or more failures than hosts.
    """
    if failed < 0 or total < 0 or max_fail_percentage < 0 or failed > total:
        raise ValueError(f"bad counts: {failed} failed of {total}, max_fail_percentage {max_fail_percentage}")
    if failed == 0:
        return False
    return failed == total or failed * 100 > max_fail_percentage * total
