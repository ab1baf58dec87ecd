"""The SSH hosts a run may not reach because an environment after its own owns them (core.types.GuardedInventory).

A run of qa reads, at its first SSH connection, the inventories of the environments after qa at their branch heads,
which a push to qa cannot change (the promotion rule stands in front of them): production's hosts, less those that
production's own tree also puts in qa's inventory (shared on purpose, a change promoted like any other). Each is read
in the sandbox like any inventory and kept per tree, so the next run reads nothing until production's branch moves.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..base import gitcli
from ..core.errors import StalledError
from ..core.tree import resolve_inside
from ..core.types import GuardedInventory, HostInfo, PlaybookRun
from . import sshgate
from .gitrepo import GitRepository

# (inventory, its tree's folder, a fresh data folder for the read) -> its hosts, read in the sandbox
Reader = Callable[[Path, Path, Path], list[HostInfo]]

_TARGETS: dict[tuple[str, str, str], frozenset[tuple[str, int]]] = {}  # (repository, tree, inventory) -> (host, port)
_LOCK = threading.Lock()


def owners(run: PlaybookRun, read: Reader, shared: tuple[tuple[str, int], ...] = ()) -> dict[tuple[str, int], str]:
    """The addresses (address, port) this run may not reach, each with the environment that owns it; never one of
    `shared` (sandbox.shared_hosts: the administrator's word that a host serves every environment).

    Raise GitopsdError (InventoryError, ExportError) when an inventory cannot be read: its hosts are then unknown.
    """
    found: dict[tuple[str, int], str] = {}
    for guard in run.guarded:
        commit = gitcli.branch_head(guard.repo, guard.branch)
        if commit is None:  # not made yet: nothing runs there
            continue
        theirs, ours = (_resolved(t) for t in _targets(guard, commit, run.data_dir.parent, read))
        for address in theirs - ours:  # compared by address: another name for a shared host is the same host
            found.setdefault(address, guard.env)
    for address in _resolved(frozenset(shared)):
        found.pop(address, None)
    return found


def _resolved(targets: frozenset[tuple[str, int]]) -> set[tuple[str, int]]:
    return {address for name, port in targets for address in sshgate.resolve(name, port)}


def _targets(
    guard: GuardedInventory, commit: str, scratch: Path, read: Reader
) -> tuple[frozenset[tuple[str, int]], frozenset[tuple[str, int]]]:
    """The SSH targets of the guarded environment's inventory and of the run's own, both as its head's tree has them."""
    tree = gitcli.tree_of(guard.repo, commit) or commit
    keys = ((str(guard.repo), tree, guard.inventory), (str(guard.repo), tree, guard.ours))
    with _LOCK:
        known = [_TARGETS.get(key) for key in keys]
    if None in known:
        # Beside the run's folder, never in it: the run writes its own folder.
        work = Path(tempfile.mkdtemp(prefix=".guarded-", dir=scratch))
        try:
            GitRepository(guard.repo).export(commit, work / "tree")
            with ThreadPoolExecutor(max_workers=2) as pool:  # both inventories of the tree side by side
                reads = {n: pool.submit(_read, work, key[2], n, read) for n, key in enumerate(keys) if known[n] is None}
                for n, future in reads.items():
                    known[n] = future.result()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    theirs, shared = (k or frozenset() for k in known)
    with _LOCK:
        _TARGETS.update({keys[0]: theirs, keys[1]: shared})
    return theirs, shared


def _read(work: Path, inventory: str, n: int, read: Reader) -> frozenset[tuple[str, int]]:
    try:
        path = resolve_inside(work / "tree", inventory)
    except StalledError:  # not in that tree (gitopsd init's placeholder): no hosts
        return frozenset()
    return frozenset(sshgate.targets(read(path, work / "tree", work / f"inventory-{n}")))
