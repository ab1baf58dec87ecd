"""The combined state (GitHub's rules) and the required-checks gate's list of what is missing."""

from __future__ import annotations

from gitopsd.gate.required import Status, combined_state, unmet


def s(context: str, state: str, url: str | None = None, description: str | None = None) -> Status:
    return Status(context, state, url, description)


def test_combined_state_follows_githubs_rules():
    assert combined_state([]) == "pending"  # nothing reported yet
    assert combined_state([s("ci/build", "success"), s("ci/test", "success")]) == "success"
    assert combined_state([s("ci/build", "success"), s("ci/test", "pending")]) == "pending"
    assert combined_state([s("ci/build", "pending"), s("ci/test", "failure")]) == "failure"
    assert combined_state([s("ci/build", "error"), s("ci/test", "success")]) == "failure"
    # A required context nobody reported keeps it pending, even when the others passed.
    assert combined_state([s("ci/build", "success")], required=("ci/build", "ci/test")) == "pending"


def test_unmet_lists_each_required_context_with_its_state_and_url():
    statuses = [s("ci/build", "success"), s("ci/test", "failure", "http://ci/1", "2 tests failed"), s("lint", "failure")]
    assert unmet(("ci/build", "ci/test", "ci/e2e"), statuses) == [
        "ci/test: failure: 2 tests failed (http://ci/1)",
        "ci/e2e: not reported",
    ]
    assert unmet(("ci/build",), statuses) == []  # a context that is not required does not count
    assert unmet((), []) == []
