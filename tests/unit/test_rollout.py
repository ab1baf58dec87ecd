"""Rolling batches sized like Ansible's `serial`, spec validation, and max_fail_percentage."""

from __future__ import annotations

import pytest

from gitopsd.core.batches import failed_too_many, split_batches, validate_batches


def hosts(n: int) -> list[str]:
    return [f"h{i}" for i in range(1, n + 1)]


def sizes(n: int, batches: list[int | str]) -> list[int]:
    return [len(batch) for batch in split_batches(hosts(n), batches)]


def test_a_canary_then_a_quarter_then_the_rest():
    assert split_batches(hosts(4), [1, "25%", "100%"]) == [["h1"], ["h2"], ["h3", "h4"]]


def test_the_last_spec_repeats_until_every_host_is_covered():
    assert split_batches(hosts(4), [1]) == [["h1"], ["h2"], ["h3"], ["h4"]]
    assert split_batches(hosts(4), ["25%"]) == [["h1"], ["h2"], ["h3"], ["h4"]]


def test_100_percent_is_every_host_at_once():
    assert split_batches(hosts(4), ["100%"]) == [hosts(4)]


@pytest.mark.parametrize(
    "n, batches, expected",
    [
        (5, ["25%"], [1, 1, 1, 1, 1]),  # 1.25 hosts: rounded down
        (5, [2], [2, 2, 1]),  # the last batch takes what is left
        (5, [1, "50%"], [1, 2, 2]),
        (5, [1, "25%", "100%"], [1, 1, 3]),
        (7, ["30%"], [2, 2, 2, 1]),
        (7, [1, "25%", "100%"], [1, 1, 5]),
        (7, [3, 10], [3, 4]),
        (7, ["10%"], [1] * 7),  # 0.7 hosts: at least one
        (3, [10], [3]),  # a batch larger than the group
        (4, ["2", "100%"], [2, 2]),  # a count may be a string of digits, as in Ansible
    ],
)
def test_odd_host_counts_split_like_ansible_serial(n, batches, expected):
    assert sizes(n, batches) == expected


def test_batches_keep_the_host_order_and_cover_every_host_once():
    split = split_batches(hosts(7), [1, "25%", 2])
    assert [h for batch in split for h in batch] == hosts(7)
    assert all(split)


def test_an_empty_group_gives_no_batches():
    assert split_batches([], [1, "25%", "100%"]) == []


@pytest.mark.parametrize("good", [[1], ["25%"], ["100%"], [1, "25%", "100%"], ["3", 2], ["1%"]])
def test_good_specs_pass_validation(good):
    assert validate_batches(good) is None


@pytest.mark.parametrize(
    "bad, words",
    [
        ([0], "at least 1"),
        ([-1], "at least 1"),
        (["0"], "at least 1"),
        (["0%"], "from 1% to 100%"),
        (["150%"], "from 1% to 100%"),
        (["abc"], "host count"),
        (["25 %"], "host count"),
        (["12.5%"], "host count"),
        ([1.5], "host count"),
        ([True], "host count"),
        ([None], "host count"),
        ([], "at least one"),
        (2, "must be a list"),
        ("25%", "must be a list"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(bad, words):
    message = validate_batches(bad)
    assert message is not None and words in message
    with pytest.raises(ValueError):
        split_batches(hosts(4), bad)


def test_the_message_names_the_bad_batch():
    assert validate_batches([1, "25%", "150%"]).startswith("batch 3 ('150%')")


@pytest.mark.parametrize(
    "failed, total, pct, stop",
    [
        (0, 4, 0, False),
        (1, 4, 0, True),  # with 0, any failure stops the rollout
        (1, 4, 25, False),  # 25 % is not more than 25 %
        (2, 4, 25, True),
        (1, 3, 33, True),  # 33.3 % > 33 %
        (1, 3, 34, False),
        (3, 4, 100, False),
        (4, 4, 100, True),  # every host of the batch failed: Ansible ends the play
        (1, 1, 50, True),
        (0, 0, 0, False),
    ],
)
def test_failed_too_many_follows_ansibles_max_fail_percentage(failed, total, pct, stop):
    assert failed_too_many(failed, total, pct) is stop


@pytest.mark.parametrize("args", [(-1, 4, 0), (5, 4, 0), (1, 4, -1)])
def test_impossible_counts_are_refused(args):
    with pytest.raises(ValueError):
        failed_too_many(*args)
