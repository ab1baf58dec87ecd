"""What a release changes against what its target environment runs now, tree-wise (rc create, rc evidence).

Ancestry alone misses a change that production ran and then rolled back: the revert leaves it an ancestor of
production's head, so `git log RELEASE ^PRODUCTION` drops it although the release brings it back. Production runs a
tree, and exact-tree promotions and rollbacks only ever give it trees the release's history holds: the changes are
the commits after the newest commit of that history with production's tree.
"""

from __future__ import annotations

from ..base import gitcli

SCANNED = 5000  # commits looked through, and listed at most


def changes_since(repo_path: str, base: str | None, commit: str) -> list[tuple[str, str]]:
    """(commit, subject) of what release `commit` changes against `base` (what the target runs; None: nothing yet),
    newest first: the non-merge commits after the newest one of `commit`'s history with `base`'s tree, or, when
    that history has no such commit, those `base` does not have."""
    since = base
    base_tree = gitcli.tree_of(repo_path, base) if base else None
    if base_tree:
        code, out, _err = gitcli.run(
            ["git", "-C", repo_path, "log", f"-n{SCANNED}", "--format=%H %T", "--end-of-options", commit]
        )
        same = [line.split()[0] for line in out.splitlines() if code == 0 and line.split()[-1] == base_tree]
        since = same[0] if same else base
    spec = [commit, f"^{since}"] if since else [commit]
    code, out, _err = gitcli.run(
        ["git", "-C", repo_path, "log", "--no-merges", f"-n{SCANNED}", "--format=%H %s", "--end-of-options", *spec]
    )
    return [(line[:40], line[41:]) for line in out.splitlines() if len(line) >= 40] if code == 0 else []
