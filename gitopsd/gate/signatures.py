"""Signed commits and signed pushes: every commit a push makes reachable must be signed by an allowed signer.

`signatures:` on an environment names the allowed signers, kept on the server outside the
repository: an SSH `allowed_signers` file (git's gpg.ssh.allowedSignersFile) and/or an OpenPGP
keyring (a GNUPGHOME folder); `paths:` may narrow who may touch which files. SSH signatures are checked
in this process (sshsig.py, with `cryptography` behind a port), exactly as ssh-keygen would accept
them; git checks whatever that leaves (`git log` with %G?, which runs `ssh-keygen -Y verify` or `gpg`),
once for all the commits a move adds (the hook remembers good SSH verdicts: Memory): the pre-receive hook judges this
for every push, the daemon again before it deploys a head (policy.judge). `signed_push: required` also wants `git push --signed` with a
fresh nonce (receive.certNonceSeed) and a certificate signed by an allowed key.

Runs in the hook: standard library only, git and ssh-keygen through gitcli.run (argv lists).
"""

from __future__ import annotations

import os

from ..base import gitcli, hookenv

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:
    from typing import Protocol

    from .sshsig import Check

    class SshCrypto(Protocol):
        """The port to `cryptography` (adapters/signing.verify_ssh), given by whoever runs the gate (hook_entry, the CLI,
        the daemon): the gate imports nothing above it. Called only when a push has commits to check; None when the
        check cannot be had (git and ssh-keygen check then)."""

        def __call__(self) -> Check | None: ...


SCAN_LIMIT = 100_000  # commits one move may add before the push is refused as too large to check
# git's %G? letters: G good, U good but unknown validity, X good but expired signature, Y good but
# expired key, R good but revoked key, B bad, E cannot be checked (key missing, gpg missing), N none.
MEANING = {
    "B": "a bad signature (it does not match the commit's content)",
    "E": "a signature that cannot be checked (unknown key, or gpg missing on the server)",
    "N": "no signature",
    "X": "an expired signature",
    "Y": "a signature by an expired key",
    "R": "a signature by a revoked key",
    "U": "a signature by a key that is not an allowed signer",
}
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
)
SSH_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")


class Rule:
    """An environment's (or main's) signature rule, as the hook sees it."""

    __slots__ = ("allowed_signers", "gpg_home", "paths", "signed_push")

    def __init__(
        self,
        allowed_signers: str = "",
        gpg_home: str = "",
        paths: tuple[tuple[str, tuple[str, ...]], ...] = (),
        signed_push: bool = False,
    ):
        self.allowed_signers, self.gpg_home, self.paths = allowed_signers, gpg_home, tuple(paths)
        self.signed_push = signed_push

    @property
    def signed_commits(self) -> bool:
        return bool(self.allowed_signers or self.gpg_home)

    def encode(self) -> str:
        """One line per field, for the hook's snapshot table (no JSON: the hook stays light)."""
        lines = [f"ssh={self.allowed_signers}", f"gpg={self.gpg_home}", f"push={int(self.signed_push)}"]
        return "\n".join(lines + [f"path:{','.join(signers)}={glob}" for glob, signers in self.paths])

    @classmethod
    def decode(cls, text: str) -> Rule | None:
        if not text:
            return None
        fields: dict[str, str] = {}
        paths = []
        for line in text.split("\n"):
            key, _, value = line.partition("=")
            if key.startswith("path:"):
                paths.append((value, tuple(filter(None, key[5:].split(",")))))
            else:
                fields[key] = value
        return cls(fields.get("ssh", ""), fields.get("gpg", ""), tuple(paths), fields.get("push") == "1")


class Signed:
    """One commit as git checked it: its letter (%G?), signer (principal or user id), key fingerprint, files."""

    __slots__ = ("commit", "letter", "signer", "key", "files", "committer")

    def __init__(self, commit: str, letter: str, signer: str, key: str, files: list[str], committer: str = ""):
        self.commit, self.letter, self.signer, self.key, self.files = commit, letter, signer, key, files
        self.committer = committer  # only ever a hint in a refusal: anyone can write it

    @property
    def ssh(self) -> bool:
        return self.key.startswith("SHA256:")

    @property
    def good(self) -> bool:
        """G, or U for an OpenPGP key: the configured keyring is the allow list, and its keys are rarely trusted
        ultimately. For SSH, U means the key is in no line of allowed_signers (or out of its validity)."""
        return self.letter == "G" or (self.letter == "U" and not self.ssh and bool(self.key))

    def names(self) -> set[str]:
        """What a `paths:` entry may name this signer by: the SSH principal; the OpenPGP fingerprint, key id or e-mail."""
        names = {self.signer, self.key}
        if "<" in self.signer and self.signer.endswith(">"):
            names.add(self.signer[self.signer.rindex("<") + 1 : -1])
        return {n for n in names if n}


def environment(rule: Rule) -> dict[str, str]:
    """The hook's environment with GNUPGHOME at the configured keyring (quarantine variables kept)."""
    env = dict(hookenv.environ())
    # Without a keyring of its own the rule allows no OpenPGP key: never the hook user's ~/.gnupg.
    env["GNUPGHOME"] = rule.gpg_home or "/nonexistent/gitopsd-allows-no-openpgp-key"
    return env


def check_commits(repo_path: str, rule: Rule, new: str, exclude: list[str], ssh_crypto: SshCrypto | None = None) -> list[Signed]:
    """Every commit reachable from `new` and from none of `exclude` (just `new` when `exclude` is empty), as git
    verified it, newest first. In the hook, SSH verdicts already reached under the same allowed_signers are reused;
    with `ssh_crypto`, good SSH signatures are checked in this process (without, git checks them all)."""
    memory = Memory.open(repo_path, rule)
    code, out, err = gitcli.run(["git", "-C", repo_path, "rev-list", f"--max-count={SCAN_LIMIT}", *walk(new, exclude)])
    if code != 0:
        raise gitcli.GitError(f"git rev-list: {err.strip() or f'exit {code}'}")
    commits = out.split()
    if len(commits) >= SCAN_LIMIT:
        raise gitcli.GitError(f"this move adds more than {SCAN_LIMIT} commits; push it in parts")
    fresh = [c for c in commits if memory is None or c not in memory.known]
    here = checked_here(repo_path, rule, fresh, ssh_crypto)
    checked = {
        s.commit: s for s in git_verified(repo_path, rule, ["--stdin"], signatures=True, only=[c for c in fresh if c not in here])
    }
    if memory is not None:
        memory.keep([*here.values(), *(s for s in checked.values() if s.good)])
    files = (
        {
            s.commit: s.files
            for s in git_verified(repo_path, rule, ["--stdin"], signatures=False, only=[c for c in commits if c not in checked])
        }
        if rule.paths
        else {}
    )
    for good in here.values():
        good.files = files.get(good.commit, [])
    found = []
    for commit in commits:
        signed = checked.get(commit) or here.get(commit)
        if signed is None:
            if memory is None:
                raise gitcli.GitError(f"git log did not report commit {commit[:7]}")
            signed = memory.recall(commit, files.get(commit, []))
        found.append(signed)
    return found


def checked_here(repo_path: str, rule: Rule, commits: list[str], ssh_crypto: SshCrypto | None) -> dict[str, Signed]:
    """Those of `commits` whose SSH signature is good by an allowed signer, checked in this process (sshsig.py) from
    one `git cat-file --batch`; git and ssh-keygen judge the others (and all of them when anything is unusual)."""
    if not commits or not rule.allowed_signers or ssh_crypto is None:
        return {}
    from . import sshsig

    try:
        with open(rule.allowed_signers, "rb") as f:
            signers = sshsig.parse_allowed_signers(f.read())
    except (OSError, sshsig.Unsupported):
        return {}
    check = ssh_crypto()
    # git hands a revocation file to ssh-keygen (-r); that is not implemented here
    if check is None or gitcli.run(["git", "-C", repo_path, "config", "gpg.ssh.revocationFile"])[1].strip():
        return {}
    code, out, _err = gitcli.run_bytes(["git", "-C", repo_path, "cat-file", "--batch"], input="\n".join(commits).encode() + b"\n")
    if code != 0:
        return {}
    found: dict[str, Signed] = {}
    at = 0
    for commit in commits:
        nl = out.find(b"\n", at)
        head = out[at:nl].split()
        if len(head) != 3 or head[0].decode() != commit or head[1] != b"commit":
            return found  # cannot happen for ids rev-list gave; git decides the rest
        size = int(head[2])
        raw, at = out[nl + 1 : nl + 1 + size], nl + 2 + size
        header = b"gpgsig" if len(commit) == 40 else b"gpgsig-sha256"
        verdict = sshsig.verdict(raw, header, signers, check)
        if verdict is not None and verdict[0] == "G":
            found[commit] = Signed(commit, "G", verdict[1], verdict[2], [], verdict[3])
    return found


def walk(new: str, exclude: list[str]) -> list[str]:
    """The arguments naming what `new` adds to what `exclude` reaches (just `new` when there is nothing to exclude)."""
    excluded = [f"^{c}" for c in exclude if c and c != gitcli.ZERO]
    return [*([] if excluded else ["--no-walk"]), "--end-of-options", new, *excluded]


def git_verified(
    repo_path: str, rule: Rule, revisions: list[str], signatures: bool, only: list[str] | None = None
) -> list[Signed]:
    """The commits `revisions` names (or the commits `only` lists), as git checked their signatures (with
    `signatures`; else just their files), in one `git log`."""
    if only is not None and not only:
        return []
    signers = rule.allowed_signers or "/dev/null"  # an SSH signature then has no principal: U, refused
    fmt = "%x01%H%x02%G?%x02%GS%x02%GF%x02%GK%x02%ce" if signatures else "%x01%H"
    # The checking programs pinned (a -c outranks the repository's config and the pusher's GIT_CONFIG_* variables).
    argv = [
        "git",
        "-C",
        repo_path,
        "-c",
        f"gpg.ssh.allowedSignersFile={signers}",
        "-c",
        "gpg.ssh.program=ssh-keygen",
        "-c",
        "gpg.program=gpg",
        "-c",
        "gpg.openpgp.program=gpg",
        "log",
        f"--format={fmt}",
        f"-n{SCAN_LIMIT}",
    ]
    if rule.paths:
        argv += ["--name-only", "--cc"]  # a merge touches only what differs from every parent (its own resolution)
    if only is not None:
        argv += ["--no-walk"]
    code, out, err = gitcli.run(argv + revisions, env=environment(rule), input=None if only is None else "\n".join(only) + "\n")
    if code != 0:
        raise gitcli.GitError(f"git log: {err.strip() or f'exit {code}'}")
    found = []
    if out.count("\x01") >= SCAN_LIMIT:
        raise gitcli.GitError(f"this move adds more than {SCAN_LIMIT} commits; push it in parts")
    for record in out.split("\x01")[1:]:
        head, _, rest = record.partition("\n")
        commit, letter, signer, primary, key, committer = (head.split("\x02") + [""] * 6)[:6]
        found.append(Signed(commit, letter, signer, primary or key, [f for f in rest.split("\n") if f], committer))
    return found


class Memory:
    """The hook's record of commits whose SSH signature git found good under one allowed_signers content.

    A commit id names its content (signature included) and `-Y verify` judges an SSH key's validity at
    the commit's own time, so the verdict cannot change while the allowed_signers bytes stay the same:
    the pusher's commits checked on main cost nothing when promoted. Kept only by the pre-receive hook
    (git sets GIT_QUARANTINE_PATH there), in the repository, which only who may move refs can write; the
    daemon never reads it and judges every head afresh. OpenPGP verdicts are not kept (a key expires by
    the clock, and the keyring changes without a file of ours changing).
    """

    __slots__ = ("path", "known")

    def __init__(self, path: str, known: dict[str, list[str]]):
        self.path, self.known = path, known

    @classmethod
    def open(cls, repo_path: str, rule: Rule) -> Memory | None:
        if not hookenv.environ().get("GIT_QUARANTINE_PATH") or not rule.allowed_signers or rule.gpg_home:
            return None
        from hashlib import sha256

        try:
            with open(rule.allowed_signers, "rb") as f:
                digest = sha256(f.read()).hexdigest()[:32]
        except OSError:
            return None  # git then says why for each commit
        path = os.path.join(repo_path, f"gitopsd-signatures-{digest}")
        known = {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    fields = line.rstrip("\n").split("\x02")
                    if len(fields) == 5 and fields[1] == "G":
                        known[fields[0]] = fields
        except (OSError, UnicodeDecodeError):
            pass
        return cls(path, known)

    def keep(self, good: list[Signed]) -> None:
        if not good:
            return
        text = "".join("\x02".join((s.commit, s.letter, s.signer, s.key, s.committer)) + "\n" for s in good)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode())  # one append per push: concurrent hooks do not interleave lines
            finally:
                os.close(fd)
        except OSError:
            pass  # a read-only repository only loses the speed-up

    def recall(self, commit: str, files: list[str]) -> Signed:
        _commit, letter, signer, key, committer = self.known[commit]
        return Signed(commit, letter, signer, key, files, committer)


def gpg_missing() -> bool:
    """Is there no `gpg` on PATH (git then says E, 'cannot be checked', for every OpenPGP signature)?"""
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        if folder and os.access(os.path.join(folder, "gpg"), os.X_OK):
            return False
    return True


def problem(rule: Rule, signed: Signed) -> str | None:
    """What is wrong with one commit's signature under `rule`, in words; None when it passes."""
    short = signed.commit[:7]
    if signed.key and not signed.ssh and not rule.gpg_home:
        return f"commit {short} has an OpenPGP signature (key {signed.key}), but only SSH signers are allowed here"
    if not signed.good:
        what = MEANING.get(signed.letter, f"a signature git rates {signed.letter!r}")
        if signed.letter in "EN" and rule.gpg_home and gpg_missing():
            # git then says N (or E) for an OpenPGP signature: nothing can tell it from none
            return f"commit {short} cannot be checked: gpg is not installed on the deploy server (apt-get install gnupg)"
        key = f" (key {signed.key})" if signed.key else ""
        if signed.letter == "E" and signed.key and not signed.ssh and rule.gpg_home:  # gpg is there: the key is not
            what = "a signature by a key that is not in the keyring"
        if signed.letter == "N" and signed.committer == gitcli.GITOPSD_IDENTITY.email:
            return (
                f"commit {short} has no signature; gitopsd wrote it: set signing_key in the config and add its "
                "public key to the allowed signers (docs/trust-model.md)"
            )
        return f"commit {short} has {what}{key}"
    if rule.paths:
        from fnmatch import fnmatchcase

        names = signed.names()
        for path in signed.files:
            for glob, allowed in rule.paths:
                if fnmatchcase(path, glob) and not names & set(allowed):
                    return (
                        f"commit {short} changes {path}, which only {', '.join(allowed)} may sign; "
                        f"it is signed by {signed.signer or signed.key}"
                    )
    return None


def judge(
    repo_path: str,
    rule: Rule,
    env_name: str,
    branch: str,
    new: str,
    exclude: list[str],
    ssh_crypto: SshCrypto | None = None,
    upstream: str | None = None,
) -> tuple[str, list[str], list[str]] | None:
    """(rule, detail, instead) of a refusal naming the commits `new` adds (to what `exclude` reaches) that are not
    signed as `rule` wants; None when all are. `upstream`: the environment branch it promotes from, whose commits
    cannot be signed again without rewriting it. policy.judge makes it a Verdict (this module is below it)."""
    try:
        found = check_commits(repo_path, rule, new, exclude, ssh_crypto)
    except gitcli.GitError as exc:
        return (
            f"{env_name} only takes commits signed by an allowed signer",
            [f"the signatures of {new[:7]} could not be checked: {exc}"],
            ["ask an operator to look at the deploy server's git and `gitopsd doctor`"],
        )
    bad = [(s, p) for s in found for p in [problem(rule, s)] if p]
    if not bad:
        return None
    where = kept_in(rule)
    detail = [p for _s, p in bad[:5]] + ([f"... and {len(bad) - 5} more"] if len(bad) > 5 else [])
    oldest = bad[-1][0].commit[:7]
    resign = (
        f"commit {oldest} is in {upstream} already, so re-signing it would rewrite {upstream}: if the key that signed "
        "it was rotated, an operator keeps that key's line in allowed_signers with valid-before (docs/trust-model.md)"
        if upstream and gitcli.is_ancestor(repo_path, bad[-1][0].commit, f"refs/heads/{upstream}")
        else f"sign them with a key the server allows: git rebase --exec 'git commit --amend --no-edit -S' {oldest}~1, "
        "then push again"
    )
    return (
        f"every commit that reaches {branch} must be signed by an allowed signer ({where})",
        [*detail, f"({len(found)} new commit(s) checked, {len(bad)} refused; nothing was deployed)"],
        [
            resign,
            "a key that is not allowed, expired or revoked: ask an operator to add yours to " + (where or "the allowed signers"),
        ],
    )


def kept_in(rule: Rule) -> str:
    """Where `rule`'s allowed keys are kept on the server, as a refusal names it for the operator who adds a key."""
    return " and ".join(
        f
        for f in (
            rule.allowed_signers and f"allowed_signers {rule.allowed_signers}",
            rule.gpg_home and f"keyring {rule.gpg_home}",
        )
        if f
    )


def push_certificate(repo_path: str, rule: Rule) -> tuple[str | None, str]:
    """(signer, '') for a push certificate with a fresh nonce signed by an allowed key; (None, why) otherwise.

    Git (receive.certNonceSeed) checks the nonce and exports GIT_PUSH_CERT*; the certificate's own
    signature is checked here against `rule`'s allowed signers, not the repository's git config.
    """
    environ = hookenv.environ()
    cert = environ.get("GIT_PUSH_CERT", "")
    if not cert:
        return None, "this push has no certificate: push with `git push --signed`"
    nonce = environ.get("GIT_PUSH_CERT_NONCE_STATUS", "")
    if nonce != "OK":
        said = {
            "UNSOLICITED": "the server asked for none",
            "MISSING": "it has none",
            "BAD": "it is not one this server issued",
            "SLOP": "it is an old one (a replayed certificate)",
        }
        return None, (
            f"the push certificate's nonce is not fresh ({nonce or 'unknown'}: "
            f"{said.get(nonce, 'not accepted')}): push again with `git push --signed`"
        )
    code, text, err = gitcli.run(["git", "-C", repo_path, "cat-file", "blob", cert])
    if code != 0:
        return None, f"the push certificate {cert[:7]} cannot be read ({err.strip()})"
    at = text.find("-----BEGIN SSH SIGNATURE-----")
    if at >= 0 and rule.allowed_signers:
        return ssh_signer(text[:at], text[at:], rule.allowed_signers)
    at = text.find("-----BEGIN PGP SIGNATURE-----")
    if at >= 0 and rule.gpg_home:
        # Not receive-pack's GIT_PUSH_CERT_STATUS: it checked with the git user's keyring, not this one.
        return gpg_signer(text[:at], text[at:], rule.gpg_home)
    return None, "the push certificate is not signed by an allowed signer (no signature of a kind this environment allows)"


def ssh_signer(payload: str, signature: str, allowed_signers: str) -> tuple[str | None, str]:
    """The principal of allowed_signers whose key made `signature` over `payload` (namespace git)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gitopsd-cert-") as tmp:
        sig = os.path.join(tmp, "cert.sig")
        with open(sig, "w") as f:
            f.write(signature)
        code, out, _err = gitcli.run(["ssh-keygen", "-Y", "find-principals", "-f", allowed_signers, "-s", sig])
        principal = out.strip().split("\n")[0] if code == 0 else ""
        if not principal:
            return None, f"the push certificate is signed by a key that is not in allowed_signers{key_named(signature)}"
        code, _out, err = gitcli.run(
            ["ssh-keygen", "-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", "git", "-s", sig], input=payload
        )
    if code != 0:
        return None, f"the push certificate's signature does not verify ({err.strip().splitlines()[-1:] or ''})"
    return principal, ""


def key_named(signature: str) -> str:
    """' (key SHA256:...)' of the key that made an armored SSH `signature`, as a refused commit names it; '' if unread."""
    from . import sshsig

    try:
        return f" (key {sshsig.fingerprint(sshsig.dearmor(signature.strip().encode())[0])})"
    except (sshsig.Unsupported, ValueError):
        return ""


def gpg_signer(payload: str, signature: str, gpg_home: str) -> tuple[str | None, str]:
    """The e-mail (else user id) of the keyring's key that made the OpenPGP `signature` over `payload`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gitopsd-cert-") as tmp:
        sig = os.path.join(tmp, "cert.asc")
        with open(sig, "w") as f:
            f.write(signature)
        try:
            code, out, _err = gitcli.run(
                ["gpg", "--homedir", gpg_home, "--batch", "--no-tty", "--status-fd", "1", "--verify", sig, "-"], input=payload
            )
        except OSError:
            return None, "the push certificate cannot be checked: gpg is not installed on the deploy server"
    # GOODSIG only for a good signature by an unrevoked, unexpired key (else REVKEYSIG, EXPKEYSIG, BADSIG, ...)
    good = [line.split(" ", 3) for line in out.splitlines() if line.startswith("[GNUPG:] GOODSIG ")]
    if code != 0 or not good or len(good[0]) < 4:
        said = {"NO_PUBKEY": "a key that is not in the keyring", "REVKEYSIG": "a revoked key", "EXPKEYSIG": "an expired key"}
        for word, key in (line.split()[1:3] for line in out.splitlines() if len(line.split()) > 2):
            if word in said:  # named as a commit signed by that key is
                return None, f"the push certificate is signed by {said[word]} (key {key})"
        return None, "the push certificate is not signed by a valid key of the keyring (unknown, revoked or expired)"
    uid = good[0][3]
    return (uid[uid.rindex("<") + 1 : -1] if "<" in uid and uid.endswith(">") else uid), ""


def allowed_signers_problems(path: str) -> list[str]:
    """Syntax problems of an allowed_signers file, each naming its line; [] when it is fine (or unreadable: said elsewhere)."""
    import base64
    import binascii

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path} cannot be read: {exc}"]
    problems = []
    for number, line in enumerate(lines, 1):
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        rest = fields[1:]
        if rest and rest[0] not in SSH_KEY_TYPES:  # options: comma separated, before the key
            options, rest = rest[0], rest[1:]
            names = [o.partition("=")[0].lower() for o in options.split(",")]
            unknown = [n for n in names if n not in SSH_OPTIONS]
            if unknown:
                problems.append(
                    f"{path}:{number}: unknown option {unknown[0]!r} (expected principals, "
                    f'options such as namespaces="git", then the key type and key)'
                )
                continue
        if len(rest) < 2 or rest[0] not in SSH_KEY_TYPES:
            problems.append(
                f"{path}:{number}: expected `PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY`, e.g. "
                "`alice@example.com ssh-ed25519 AAAA...` (the line of `ssh-keygen -y -f KEY`)"
            )
            continue
        try:
            base64.b64decode(rest[1], validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{path}:{number}: the key after {rest[0]} is not base64")
    return problems
