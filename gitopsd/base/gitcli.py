"""Git through its command line: the writes (commits, compare-and-swap ref updates) and the hook's reads.

The pre-receive hook runs this on every push, so it imports only `os` and `select`: `subprocess`
alone costs about 10 ms of interpreter start here, as much as a whole bare push (bench/run.py,
hooks). `run()` below is the small part of `subprocess.run` this module needs: spawn, feed stdin,
collect stdout and stderr without deadlock, wait.

Every call is an argv list; revisions given by anyone else come after `--end-of-options`. Child
processes inherit the environment, so inside pre-receive they see quarantined objects.

This is the one module that starts git (pygit2, in adapters/gitrepo.py, reads for the daemon): the repository's
own config files are read and written here too (`config --file`, which works whoever owns them).

Every git process started here reads the repository's real objects: no replace refs
(`refs/replace/*`), no grafts. pygit2, which exports what the daemon deploys, never honours them,
so a judge that did could be shown a decoy commit (a tree verified elsewhere, a fast-forward that
is not one) while the deployer gets the real one. `run()` sets this for every git it starts, so
no caller can forget it.
"""

from __future__ import annotations

import os
import select

from ..core.errors import GitError, TransientError
from . import hookenv

ZERO = "0" * 40
__all__ = ["GitError", "ZERO", "git", "run"]


class Identity:
    """The author and committer gitopsd writes its own commits as."""

    __slots__ = ("name", "email")

    def __init__(self, name: str, email: str):
        self.name, self.email = name, email


GITOPSD_IDENTITY = Identity("gitopsd", "gitopsd@localhost")

# The environment variable turns replace refs off, but a repository's `core.useReplaceRefs=true`
# would turn them on again; a `-c` option outranks every config file. Git 2.39 still reads
# `info/grafts` (deprecated) whatever GIT_NO_REPLACE_OBJECTS says; a graft file that cannot exist
# turns that off.
# No git hook runs from gitopsd's own git calls: in the service layout the repository belongs to
# the git user, whose `reference-transaction` hook would otherwise run as the daemon's user when a
# rollback moves a branch.
NO_REPLACE_ARGS = ("-c", "core.useReplaceRefs=false", "-c", "core.hooksPath=/dev/null")
NO_REPLACE_ENV = {"GIT_NO_REPLACE_OBJECTS": "1", "GIT_GRAFT_FILE": "/nonexistent/gitopsd-reads-no-grafts"}


def run(argv: list[str], input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `argv` (found on PATH) and return (exit code, stdout, stderr). Never through a shell.

    A git started here sees the real objects only (no replace refs, no grafts; see above).
    """
    code, out, err = run_bytes(argv, None if input is None else input.encode(), env)
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def run_bytes(argv: list[str], input: bytes | None = None, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """`run`, with stdin and stdout as bytes: what checks signatures needs the objects' exact bytes."""
    if argv[0] == "git":
        # A configured repository is trusted by whoever runs gitopsd on it (the daemon, an operator as
        # root): git's ownership check would refuse it in the service layout (another user owns it).
        safe = ["-c", f"safe.directory={argv[2]}"] if len(argv) > 2 and argv[1] == "-C" else []
        argv = ["git", *NO_REPLACE_ARGS, *safe, *argv[1:]]
    env = {**(hookenv.environ() if env is None else env), **NO_REPLACE_ENV}
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    try:
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    except OSError:
        for fd in (stdin_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (stdin_r, out_w, err_w):  # the child's ends (pipes are close-on-exec otherwise)
            os.close(fd)
    pending = input or b""
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    if pending:
        os.set_blocking(stdin_w, False)
        poller.register(stdin_w, select.POLLOUT)
    else:
        os.close(stdin_w)
    open_fds = set(chunks) | ({stdin_w} if pending else set())
    while open_fds:
        for fd, _event in poller.poll():
            if fd == stdin_w:
                try:
                    pending = pending[os.write(stdin_w, pending[:65536]) :]
                except BrokenPipeError:
                    pending = b""
                if not pending:
                    poller.unregister(stdin_w)
                    os.close(stdin_w)
                    open_fds.discard(stdin_w)
                continue
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks[out_r]), b"".join(chunks[err_r])


def blob_to_fd(repo: str | os.PathLike[str], oid: str, fd: int) -> None:
    """Write blob `oid` of `repo` to the open file `fd` with `git cat-file blob`, which streams it: never in our memory.

    Raise GitError when git cannot (a missing or corrupt object)."""
    argv = ["git", *NO_REPLACE_ARGS, "-c", f"safe.directory={repo}", "-C", str(repo), "cat-file", "blob", oid]
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, fd, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    with os.fdopen(err_r, "rb") as errors:
        try:
            pid = os.posix_spawnp("git", argv, {**hookenv.environ(), **NO_REPLACE_ENV}, file_actions=actions)
        finally:
            os.close(err_w)
        err = errors.read()
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise GitError(f"git cat-file blob {oid}: {err.decode('utf-8', 'replace').strip() or 'failed'}")


def git(
    repo: str | os.PathLike[str], *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = True
) -> str:
    """Run `git ARGS` in a repository and return its stdout. Raise GitError on failure."""
    code, out, err = run(["git", "-C", str(repo), *args], input=input, env=env)
    if check and code != 0:
        raise GitError(f"git {' '.join(args[:2])}: {err.strip() or f'exit {code}'}")
    return out


def rev_parse(repo: str | os.PathLike[str], rev: str) -> str | None:
    """Given a revision, return its full object id, or None if it does not resolve."""
    out = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", rev, check=False).strip()
    return out or None


def branch_head(repo: str | os.PathLike[str], branch: str) -> str | None:
    return rev_parse(repo, f"refs/heads/{branch}^{{commit}}")


def branch_heads(repo: str | os.PathLike[str], branches: list[str]) -> dict[str, tuple[str, str]]:
    """The commit and its tree at refs/heads/B for each of `branches` that points at a commit: one git process."""
    code, out, _err = run(
        [
            "git",
            "-C",
            str(repo),
            "for-each-ref",
            "--format=%(refname) %(objectname) %(objecttype) %(tree)",
            *[f"refs/heads/{b}" for b in branches],
        ]
    )
    wanted = {f"refs/heads/{b}": b for b in branches}
    heads: dict[str, tuple[str, str]] = {}
    if code != 0:  # one broken ref (a missing object) fails the whole listing: read the branches one by one
        for branch in branches:
            commit = branch_head(repo, branch)
            tree = tree_of(repo, commit) if commit else None
            if commit and tree:
                heads[branch] = (commit, tree)
        return heads
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in wanted and parts[2] == "commit":  # patterns also match refs/heads/B/...
            heads[wanted[parts[0]]] = (parts[1], parts[3])
    return heads


def read_branches(repo: str | os.PathLike[str], branches: list[str]) -> dict[str, str] | None:
    """The commits of refs/heads/B read from the ref files (loose, then packed-refs): no git process.

    For display only (`gitopsd status`): nothing that judges uses it. None when the repository
    cannot be read that way (a symbolic ref, an unreadable file): then ask git.
    """
    found: dict[str, str] = {}
    try:
        for branch in branches:
            try:
                with open(os.path.join(repo, "refs", "heads", branch), encoding="ascii") as handle:
                    value = handle.read().strip()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            if len(value) not in (40, 64) or not all(c in "0123456789abcdef" for c in value):
                return None
            found[branch] = value
        missing = {f"refs/heads/{b}": b for b in branches if b not in found}
        if missing:
            try:
                with open(os.path.join(repo, "packed-refs"), encoding="utf-8") as handle:
                    for line in handle:
                        parts = line.split()
                        if len(parts) == 2 and parts[1] in missing:
                            found[missing[parts[1]]] = parts[0]
            except FileNotFoundError:
                pass
    except (OSError, UnicodeDecodeError):
        return None
    return found


def read_heads(repo: str | os.PathLike[str]) -> list[str] | None:
    """The commits every branch (refs/heads/...) points at, read from the ref files (loose over packed-refs): no git process.

    The daemon's look at each of 1,000 repositories asks this (first-seen times, issue 28); nothing that judges uses it.
    None when the refs cannot be read that way (a symbolic ref, an unreadable file): then ask git.
    """
    heads: dict[str, str] = {}
    try:
        try:
            with open(os.path.join(repo, "packed-refs"), encoding="utf-8") as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].startswith("refs/heads/"):
                        heads[parts[1]] = parts[0]
        except FileNotFoundError:
            pass
        top = os.path.join(repo, "refs", "heads")
        for folder, _folders, files in os.walk(top, onerror=_raise):
            for name in files:
                if name.endswith(".lock"):  # a ref being written: git reads the ref beside it too
                    continue
                with open(os.path.join(folder, name), encoding="ascii") as handle:
                    heads["refs/heads/" + os.path.relpath(os.path.join(folder, name), top)] = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not all(len(v) in (40, 64) and all(c in "0123456789abcdef" for c in v) for v in heads.values()):
        return None
    return sorted(set(heads.values()))


def _raise(exc: OSError) -> None:
    raise exc


def tree_of(repo: str | os.PathLike[str], commit: str) -> str | None:
    return rev_parse(repo, f"{commit}^{{tree}}")


def trees_of(repo: str | os.PathLike[str], *commits: str) -> list[str | None]:
    """The trees of several commits with one git process (None for any that does not resolve).

    The names go on stdin, one per line, so none can be taken for an option.
    """
    code, out, _err = run(
        ["git", "-C", str(repo), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input="".join(f"{c}^{{tree}}\n" for c in commits if "\n" not in c),
    )
    lines = out.splitlines()
    if code != 0 or len(lines) != len(commits):
        return [tree_of(repo, c) for c in commits]
    return [line.split()[0] if line.endswith(" tree") else None for line in lines]


def subject(repo: str | os.PathLike[str], commit: str) -> str:
    return git(repo, "log", "-1", "--format=%s", "--end-of-options", commit).strip()


def parents(repo: str | os.PathLike[str], commit: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n", "1", "--end-of-options", commit).split()[1:]


def is_ancestor(repo: str | os.PathLike[str], ancestor: str, descendant: str) -> bool:
    return run(["git", "-C", str(repo), "merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant])[0] == 0


FORWARD_WALK = 1000  # commits one push may add and still be judged by one git process (more: two more)


def forward(repo: str | os.PathLike[str], old: str, new: str) -> tuple[bool, str | None, str | None]:
    """Given a branch's old and new head, return (does new contain old, new's tree, old's tree).

    One git process for a branch moved forward by up to FORWARD_WALK commits: the walk from `new`
    stops at `old`, which git then lists as a boundary, with its tree. Anything else (a rewrite, a
    longer walk) asks merge-base and cat-file, as before.
    """
    if new != old and "\n" not in old + new:
        code, out, _err = run(
            [
                "git",
                "-C",
                str(repo),
                "rev-list",
                "--boundary",
                f"--max-count={FORWARD_WALK}",
                "--no-commit-header",
                "--format=%m %H %T",
                "--end-of-options",
                new,
                f"^{old}",
            ]
        )
        rows = [line.split() for line in out.splitlines()]
        trees = {commit: tree for _mark, commit, tree in (row for row in rows if len(row) == 3)}
        # A boundary is a parent of a commit reached from `new`: `old` listed so is `new`'s ancestor.
        if code == 0 and ["-", old, trees.get(old)] in rows and new in trees:
            return True, trees[new], trees[old]
    tree, old_tree = trees_of(repo, new, old)
    return is_ancestor(repo, old, new), tree, old_tree


SIGNING_KEY = "gitopsd.signingKey"  # in the repository's config: install-hooks and the daemon copy `signing_key` there


def signing_args(repo: str | os.PathLike[str]) -> list[str]:
    """What makes `git commit-tree` sign with the service's SSH key, when one is set for `repo`; else nothing.

    (git 2.39's commit-tree ignores commit.gpgSign: the key is given as -S, the format with -c.)
    """
    key = config_get(os.path.join(os.fspath(repo), "config"), SIGNING_KEY)
    return ["-c", "gpg.format=ssh", "commit-tree", f"-S{key}"] if key else ["commit-tree"]


def commit_tree(
    repo: str | os.PathLike[str], tree: str, parent_ids: list[str], message: str, identity: Identity = GITOPSD_IDENTITY
) -> str:
    """Write a commit object for `tree` with the given parents, signed when a key is set; return its id. Moves no ref."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": identity.name,
        "GIT_AUTHOR_EMAIL": identity.email,
        "GIT_COMMITTER_NAME": identity.name,
        "GIT_COMMITTER_EMAIL": identity.email,
    }
    args = signing_args(repo)
    for p in parent_ids:
        args += ["-p", p]
    return git(repo, *args, "-F", "-", "--end-of-options", tree, input=message, env=env).strip()


LOCK_RETRIES = (0.05, 0.2, 0.5)  # seconds between attempts while another git process holds the ref's lock


def update_branch(repo: str | os.PathLike[str], branch: str, new: str, expected_old: str, reason: str) -> bool:
    """Move a branch to `new` only if it still points at `expected_old` (compare-and-swap).

    Return False if the branch moved meanwhile. Raise TransientError if another git process held
    the ref's lock through every retry: a later attempt may succeed, a moved branch never.
    """
    argv = ["git", "-C", str(repo), "update-ref", "-m", reason, f"refs/heads/{branch}", new, expected_old]
    for pause in (*LOCK_RETRIES, None):
        code, _out, err = run(argv)
        if code == 0:
            return True
        # git's words when `<ref>.lock` (or packed-refs.lock) exists: "Unable to create '....lock': File exists."
        if ".lock': File exists" not in err:
            return False
        if pause is not None:
            import time

            time.sleep(pause)
    lock = os.path.normpath(err.split("Unable to create '", 1)[-1].split("'", 1)[0])
    raise TransientError(
        f"cannot move {branch} in {repo}: another git process holds {lock}; try again in a moment "
        f"(if no git process runs there, the lock was left by one that crashed: remove {lock})"
    )


def create_branch(repo: str | os.PathLike[str], branch: str, commit: str, reason: str) -> bool:
    return update_branch(repo, branch, commit, ZERO, reason)


# -- a repository's config and other files, read and written as files ------------------------------------
# `git -C REPO config` refuses a repository another user owns ("dubious ownership"), which is the
# normal case for root and for the daemon's user; `--file` reads and writes the file itself.


def config_get(file: str | os.PathLike[str], key: str) -> str | None:
    """The value of `key` in a git config file, None if it is not set (or the file cannot be read)."""
    code, out, _err = run(["git", "config", "--file", str(file), "--get", key])
    return out.strip() if code == 0 else None


def config_get_all(file: str | os.PathLike[str], key: str) -> list[str]:
    code, out, _err = run(["git", "config", "--file", str(file), "--get-all", key])
    return out.splitlines() if code == 0 else []


def config_set(file: str | os.PathLike[str], key: str, value: str, *, add: bool = False) -> None:
    """Set (or with `add`, add) `key` in a git config file. Raise GitError with git's words."""
    code, _out, err = run(["git", "config", "--file", str(file), *(["--add"] if add else []), key, value])
    if code != 0:
        raise GitError(f"cannot write {key} in {file}: {err.strip() or f'exit {code}'}")


def init_bare(path: str | os.PathLike[str], initial_branch: str = "main") -> None:
    code, _out, err = run(["git", "init", "--quiet", "--bare", f"--initial-branch={initial_branch}", str(path)])
    if code != 0:
        raise GitError(f"git init {path}: {err.strip() or f'exit {code}'}")


def write_tree_of(repo: str | os.PathLike[str], folder: str | os.PathLike[str], index_file: str) -> str:
    """Store every file under `folder` in `repo` (through a private index) and return the tree's id."""
    env = {**os.environ, "GIT_INDEX_FILE": index_file}
    for args in (["--work-tree", str(folder), "add", "-A", "."], ["write-tree"]):
        code, out, err = run(["git", f"--git-dir={repo}", *args], env=env)
        if code != 0:
            raise GitError(f"git {args[-3] if len(args) > 2 else args[0]}: {err.strip() or f'exit {code}'}")
    return out.strip()


def empty_tree(repo: str | os.PathLike[str]) -> str:
    """Write git's empty tree into `repo` and return its id."""
    code, out, err = run(["git", f"--git-dir={repo}", "mktree"], input="")
    if code != 0:
        raise GitError(f"git mktree: {err.strip() or f'exit {code}'}")
    return out.strip()


def opens_as(prefix: list[str], repo: str | os.PathLike[str], env: dict[str, str]) -> tuple[int, str]:
    """Whether git run after `prefix` (e.g. setpriv as another user) opens `repo` by its own trust (no
    safe.directory given here: that is what is checked). Return (exit code, stderr)."""
    # From `/`: the other user may not enter this process's working folder.
    code, _out, err = run(
        [*prefix, "env", "--chdir=/", "git", *NO_REPLACE_ARGS, "-C", str(repo), "rev-parse", "--git-dir"], env=env
    )
    return code, err
