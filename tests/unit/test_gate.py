"""The hook's configuration snapshot (gate/snapshot.py) and the nudge datagram (gate/nudge.py)."""

from __future__ import annotations

import os
import subprocess

from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.gate import snapshot
from gitopsd.gate.nudge import Nudge

CONFIG = """
state_dir: state
runtime_dir: run
identity_env: [GL_USER, REMOTE_USER]
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
      - name: production
        promote_from: qa
        override_by: [alice, bob smith]
        windows:
          - allow: "0 9 * * 1-5"
            duration: 8h
            timezone: Europe/Berlin
            name: office hours
          - deny: "0 0 24 12 *"
            duration: 2d
"""


def _setup(tmp_path):
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    path = tmp_path / "gitopsd.yml"
    path.write_text(CONFIG.format(repo=repo))
    return load(path), path, repo


def test_the_snapshot_round_trips_what_the_rule_reads(tmp_path):
    config, path, repo = _setup(tmp_path)
    store = Store(config.database)
    store.save_gate(snapshot.from_config(config))
    store.save_gate(snapshot.from_config(config))  # saving again replaces, never duplicates
    store.close()
    db = snapshot.connect_readonly(str(config.database))
    snap = snapshot.load(db, str(path), str(repo))
    assert snap is not None
    assert snap.identity_env == ("GL_USER", "REMOTE_USER")
    assert snap.nudge_socket == str(config.nudge_socket)
    [shop] = snap.repositories
    want = snapshot.from_config(config).repository("shop")
    assert [(e.name, e.branch, e.promote_from, e.override_by, [repr(w) for w in e.windows]) for e in shop.environments] == [
        (e.name, e.branch, e.promote_from, e.override_by, [repr(w) for w in e.windows]) for e in want.environments
    ]
    assert shop.environment("production").override_by == ("alice", "bob smith")
    assert [w.name for w in shop.environment("production").windows][0] == "office hours"
    assert snap.repository_at(str(repo)) is shop and snap.repository_at(str(tmp_path)) is None
    # Another repository path: the snapshot is current, it just holds no repository there.
    assert snapshot.load(db, str(path), str(tmp_path)).repositories == []


def test_any_change_to_the_config_file_makes_the_snapshot_stale(tmp_path):
    config, path, repo = _setup(tmp_path)
    store = Store(config.database)
    store.save_gate(snapshot.from_config(config))
    store.close()
    db = snapshot.connect_readonly(str(config.database))
    assert snapshot.load(db, str(path), str(repo)) is not None
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same content, touched
    assert snapshot.load(db, str(path), str(repo)) is None
    path.unlink()
    assert snapshot.load(db, str(path), str(repo)) is None


def test_a_store_without_snapshot_tables_means_no_snapshot(tmp_path):
    import sqlite3

    config, path, repo = _setup(tmp_path)
    config.database.parent.mkdir()
    sqlite3.connect(config.database).close()
    assert snapshot.load(snapshot.connect_readonly(str(config.database)), str(path), str(repo)) is None
    assert snapshot.connect_readonly(str(tmp_path / "missing.db")) is None
    assert snapshot.Ledger(None).tree_succeeded("shop", "qa", "0" * 40) is False


def test_a_nudge_round_trips_and_garbage_is_dropped():
    commit = "a" * 40
    sent = Nudge(
        repo="/srv/git/shop.git",
        trigger="push",
        actor="alice",
        commits=(commit, "not-a-sha"),
        reason="hotfix; {{ lookup('pipe', 'id') }}",
    )
    got = Nudge.decode(sent.encode(), sender_uid=0)
    assert (got.repo, got.trigger, got.actor, got.commits, got.reason, got.sender_uid) == (
        "/srv/git/shop.git",
        "push",
        "alice",
        (commit,),
        "hotfix; {{ lookup('pipe', 'id') }}",
        0,
    )
    assert got.who() == "alice (via root)"
    assert Nudge.decode(b'{"repo": "/x"}', None) is None
    assert Nudge.decode(b"gitopsd-nudge-1\0trigger=push", None) is None  # no repository
    assert Nudge.decode(b"gitopsd-nudge-1\0repo=/x\0junk", None) is None  # a field without '='
    smuggled = Nudge(repo="/x", trigger="push", actor="eve\0commit=" + commit).encode()
    assert Nudge.decode(smuggled, None).commits == ()  # NUL cannot split a field
