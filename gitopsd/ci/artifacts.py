"""Build once, deploy the same bits: the files CI steps build, kept by content and listed per tree.

A step's `artifacts` globs name files in its run's export. Each file is copied once into
`artifacts_dir/sha256/<hex>` (content-addressed: the same bits are stored once), and the tree's
manifest `artifacts_dir/manifests/<repo>/<tree>.json` maps its name (the path relative to the
export) to {sha256, size, path}. Every deployment of that tree, in every environment, gets the
manifest as `gitopsd_artifacts`, so staging and production run the identical file.

Retention: a manifest a deployment used is kept for good; of the others, the newest
`ci.keep_artifacts` trees' per repository; a stored file goes with the last manifest naming it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from ..core.errors import GitopsdError

log = logging.getLogger("gitopsd.ci")

CHUNK = 1 << 20
# What a name may be: it reaches playbooks (as a key of gitopsd_artifacts) and log lines, so no control
# characters, no newlines, and none of Jinja's delimiters; everything a build's file names usually use.
NAME_RE = re.compile(r"[A-Za-z0-9._+@=,~/-]{1,255}")
TREE_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Vars = dict[str, dict[str, str]]  # name -> {path, sha256}: what a deployment gets


class ArtifactError(GitopsdError):
    """A step's artifacts cannot be kept (a glob matches nothing, a file leads out of the export, a bad name)."""


def check_name(name: str) -> str:
    """Return `name` if it may reach a playbook; raise ArtifactError saying why not."""
    if not NAME_RE.fullmatch(name) or any(part in ("", ".", "..") for part in name.split("/")):
        raise ArtifactError(
            f"artifact {name!r} has characters gitopsd does not pass to playbooks (control characters, "
            "newlines, spaces, braces...): rename it to letters, digits and ._+@=,~/-"
        )
    return name


def find(export: Path, pattern: str) -> list[tuple[str, Path]]:
    """(name, real path) of every file `pattern` matches in `export`. Raise ArtifactError for none, or one leading out."""
    root = export.resolve()
    found = []
    for match in sorted(glob.glob(pattern, root_dir=root, recursive=True)):
        path = root / match
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a dangling link, a link loop
            raise ArtifactError(f"artifact {match} cannot be read: {exc}") from exc
        if not real.is_relative_to(root):
            raise ArtifactError(f"artifact {match} leads out of the export (to {real}): a symlink? It is not kept")
        if real.is_file():
            found.append((check_name(Path(match).as_posix()), real))
    if not found:
        raise ArtifactError(f"artifact glob {pattern!r} matched no file in the export")
    return found


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


class ArtifactStore:
    """The artifacts folder (config.artifacts_dir), for the daemon's threads: instances of one folder share a lock."""

    def __init__(self, root: Path):
        self.root = Path(root)
        with _LOCKS_LOCK:
            self._lock = _LOCKS.setdefault(self.root, threading.Lock())

    def blob(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    def _manifest_path(self, repo: str, tree: str) -> Path:
        if not TREE_RE.fullmatch(tree) or "/" in repo or repo in ("", ".", ".."):
            raise ArtifactError(f"no artifacts for {repo!r} tree {tree!r}: not a repository name and tree id")
        return self.root / "manifests" / repo / f"{tree}.json"

    def _read(self, repo: str, tree: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._manifest_path(repo, tree).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"the artifact manifest of {repo} tree {tree[:12]} cannot be read: {exc}") from exc
        return data if isinstance(data, dict) else None

    def _write(self, repo: str, tree: str, data: dict[str, Any]) -> None:
        path = self._manifest_path(repo, tree)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old manifest or the new one

    def _store(self, source: Path) -> tuple[str, int]:
        """Copy `source` into the content-addressed folder; return (sha256, size)."""
        folder = self.root / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 (sandboxed playbooks read artifacts as another user; nothing secret)
        digest, size = hashlib.sha256(), 0
        tmp = folder / f".incoming-{os.getpid()}-{threading.get_ident()}"
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        os.chmod(tmp, 0o644)
        final = self.blob(digest.hexdigest())
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        return digest.hexdigest(), size

    def keep(self, repo: str, tree: str, export: Path, globs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Store the files `globs` match in `export` and list them in the tree's manifest; return what was added.

        Build once: a name the tree's manifest lists already keeps its first bits (a deployment may
        have used them). Raise ArtifactError (nothing is listed then) for a glob matching nothing.
        """
        files = [item for pattern in globs for item in find(export, pattern)]
        with self._lock:  # also while copying: `prune` must not take a file before the manifest lists it
            stored = {name: self._store(real) for name, real in files}
            data = self._read(repo, tree) or {
                "repo": repo,
                "tree": tree,
                "created_at": time.time(),
                "used": False,
                "artifacts": {},
            }
            added = {}
            for name, (sha256, size) in stored.items():
                if name in data["artifacts"]:
                    if data["artifacts"][name]["sha256"] != sha256:
                        log.warning(
                            "artifact %s of tree %s was built again with other bits; the first build is kept",
                            name,
                            tree[:12],
                            extra={"repo": repo},
                        )
                    continue
                added[name] = data["artifacts"][name] = {"sha256": sha256, "size": size, "path": str(self.blob(sha256))}
            self._write(repo, tree, data)
        return added

    def manifest(self, repo: str, tree: str) -> dict[str, dict[str, Any]]:
        """The tree's artifacts as its manifest lists them (name -> {sha256, size, path, provenance?}); {} for none."""
        with self._lock:
            data = self._read(repo, tree)
        artifacts = data.get("artifacts") if data else None
        return dict(artifacts) if isinstance(artifacts, dict) else {}

    def attest(self, repo: str, tree: str, name: str, provenance: Path) -> None:
        """Name the signed statement of the tree's artifact `name` in its manifest (ci/provenance.py)."""
        with self._lock:
            data = self._read(repo, tree)
            if data and name in data.get("artifacts", {}):
                data["artifacts"][name]["provenance"] = str(provenance)
                self._write(repo, tree, data)

    def for_deployment(self, repo: str, tree: str) -> Vars:
        """What a deployment of `tree` gets as `gitopsd_artifacts` (name -> {path, sha256}); the tree's files are kept for good."""
        with self._lock:
            data = self._read(repo, tree)
            if not data or not data.get("artifacts"):
                return {}
            if not data.get("used"):
                data["used"] = True
                self._write(repo, tree, data)
        return {
            check_name(name): {"path": str(self.blob(entry["sha256"])), "sha256": str(entry["sha256"])}
            for name, entry in sorted(data["artifacts"].items())
        }

    def prune(self, keep: dict[str, int]) -> int:
        """Delete manifests beyond the newest keep[repo] unused ones of each repository, then unlisted files.

        Return how many files were deleted. Repositories not in `keep` (no longer configured) keep
        their used manifests only.
        """
        removed = 0
        with self._lock:
            manifests = self.root / "manifests"
            listed: set[str] = set()
            unreadable = False
            for folder in sorted(manifests.iterdir()) if manifests.is_dir() else []:
                unused = []
                for path in folder.glob("*.json"):
                    try:
                        data = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        unreadable = True  # leave it, and every file (it may list any), alone
                        continue
                    shas = {str(e.get("sha256")) for e in data.get("artifacts", {}).values()}
                    if data.get("used"):
                        listed |= shas
                    else:
                        unused.append((float(data.get("created_at", 0)), path, shas))
                unused.sort(key=lambda u: u[0], reverse=True)
                n = keep.get(folder.name, 0)
                for _created, _path, shas in unused[:n]:
                    listed |= shas
                for _created, path, _shas in unused[n:]:
                    path.unlink(missing_ok=True)
                    shutil.rmtree(self.root / "provenance" / folder.name / path.stem, ignore_errors=True)
            blobs = self.root / "sha256"
            for blob in blobs.iterdir() if blobs.is_dir() and not unreadable else []:
                if blob.name not in listed and not blob.name.startswith(".incoming-"):
                    blob.unlink(missing_ok=True)
                    removed += 1
        return removed
