"""The command line of promotion previews and of "where is it running?": preview, where, hosts ENV|trust ENV.

`preview` asks the daemon over its control socket (it runs previews sandboxed, one per target
environment at a time) and waits for the result in the state store; `where` and `hosts ENV` read
the store only (readmodels.py: the API shows the same).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from ..core.errors import UserError
from ..services.readmodels import host_runs, preview_view, tree_named, where_view
from .common import environment, load_config, print_preview, repository
from .common import load_config as _config
from .common import repository as _repo
from .common import when as _when


def cmd_preview(args: argparse.Namespace) -> int:
    from ..adapters.store import Store

    config = load_config(args)
    repo = repository(config, args.repo)
    preview_id = args.show
    if preview_id is None:
        if not args.rc and (args.source is None or args.target is None):
            raise UserError("say what to preview: gitopsd preview SRC DST (e.g. staging production), or --rc NAME, or --show ID")
        from ..adapters.control import ControlError, call

        request = {"op": "preview", "repo": repo.name, "from": args.source, "to": args.target, "rc": args.rc, "tree": args.tree}
        try:
            answer = call(config.control_socket, request, owner=config.state_dir)
        except ControlError as exc:
            raise UserError(str(exc)) from exc
        if not answer.get("ok"):
            raise UserError(str(answer.get("error") or "refused"))
        preview_id = int(answer["preview"])
        if args.no_wait:
            print(answer.get("message", f"preview #{preview_id} queued"))
            return 0
    deadline = time.monotonic() + args.timeout
    while True:
        with Store.of(config, readonly=True) as store:
            rows = store.previews(repo.name, preview_id=preview_id, limit=1)
            view = preview_view(store, rows[0]) if rows else None
        if view is None:
            raise UserError(f"no preview #{preview_id} in {repo.name}: the daemon records each one it is asked for")
        if view["state"] in ("done", "failed") or args.show is not None:
            break
        if time.monotonic() > deadline:
            raise UserError(
                f"preview #{preview_id} is still {view['state']} after {args.timeout:g}s: "
                f"see it later with gitopsd preview --show {preview_id}"
            )
        time.sleep(0.5)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print_preview(view, diffs=not args.no_diff)
    if view["state"] == "failed":
        raise UserError(f"preview #{preview_id} failed: {view['summary']}")
    return 0


def cmd_where(args: argparse.Namespace) -> int:
    from ..adapters.store import Store

    config = load_config(args)
    repo = repository(config, args.repo)
    what = args.what
    with Store.of(config, readonly=True) as store:
        tree = tree_named(store, repo, what)
        if tree is None:
            raise UserError(
                f"no commit, tree or release candidate {what[:80]!r} in {repo.name}: give a commit or "
                "tree id, or rc/NAME (gitopsd rc list)"
            )
        rows = where_view(store, repo, tree)
    if args.json:
        print(json.dumps({"tree": tree, "hosts": rows}, indent=2))
        return 0
    if not rows:
        print(f"tree {tree[:7]} runs nowhere now (no host of {repo.name}'s environments runs it)")
        return 0
    print(f"tree {tree[:7]} runs on:")
    print(f"  {'ENV':<12} {'HOST':<16} {'SINCE':<22} {'DEPLOYMENT':<11} COMMIT")
    for r in rows:
        print(f"  {r['env']:<12} {r['host']:<16} {_when(r['since']):<22} #{r['deployment']:<10} {r['commit'][:7]}")
    return 0


def cmd_hosts_list(args: argparse.Namespace) -> int:
    """`hosts ENV`: per host, the tree it runs, when it was deployed, the last check and drift."""
    from ..adapters.store import Store

    config = load_config(args)
    repo = repository(config, args.repo)
    env = repo.environment(args.action)
    if env is None:
        raise UserError(
            f"repository {repo.name} has no environment {args.action[:100]!r} "
            f"(it has: {', '.join(e.name for e in repo.environments)}); `gitopsd hosts trust ENV` "
            "records host keys"
        )
    with Store.of(config, readonly=True) as store:
        rows = host_runs(store, repo.name, env.name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no deployment to {env.name} has reached a host yet")
        return 0
    print(f"{'HOST':<16} {'TREE':<8} {'COMMIT':<8} {'DEPLOYED AT':<22} {'LAST RESULT':<12} {'LAST CHECK':<22} DRIFT")
    for r in rows:
        print(
            f"{r['host']:<16} {(r['tree'] or '-')[:7]:<8} {(r['commit'] or '-')[:7]:<8} {_when(r['deployed_at']):<22} "
            f"{r['last_result']:<12} {_when(r['last_check']):<22} {r['drift'] or '-'}"
        )
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    """`hosts ENV` lists what each host runs; `hosts trust ENV` records their SSH host keys."""
    if args.env is None:
        return cmd_hosts_list(args)
    if args.action != "trust":
        raise UserError(
            f"unknown hosts action {args.action[:40]!r}: `gitopsd hosts ENV` lists what each host runs, "
            "`gitopsd hosts trust ENV` records their SSH host keys"
        )
    from ..services.hosts import TrustError, trust

    config = _config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    try:
        return trust(config, repo, env, yes=args.yes, ref=args.ref)
    except TrustError as exc:
        raise UserError(str(exc)) from exc


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register preview and where on the main parser (cli.build_parser); `hosts ENV` is cli.py's `hosts`."""
    del common
    p = add(
        "preview",
        "what promoting SRC's tree to DST would change, host by host (--check --diff)",
        "Ask the daemon to run what SRC runs (or --tree, a tree SRC ran; or release candidate --rc) with\n"
        "`--check --diff` against DST's inventory and vault, sandboxed like a deployment, changing nothing,\n"
        "and print per host and task: files with their diff, packages, services handlers would restart, tasks\n"
        "that cannot run in check mode (cannot predict) and unreachable hosts. Never a no_log value or a vault\n"
        "secret. Recorded as a preview, never as a deployment; release candidates get one when created, and\n"
        "their approvals bind to it (docs/preview.md). Exit code 1 when the preview failed or a host was\n"
        "unreachable.",
        cmd_preview,
    )
    p.add_argument("source", metavar="SRC", nargs="?", help="the environment whose tree to preview, e.g. staging")
    p.add_argument("target", metavar="DST", nargs="?", help="the environment it would go to, e.g. production")
    p.add_argument("--rc", metavar="NAME", help="preview release candidate rc/NAME against its target")
    p.add_argument("--tree", metavar="TREE", help="a tree (or commit) SRC ran successfully (default: what it runs)")
    p.add_argument("--show", type=int, metavar="ID", help="show preview ID (from the store; asks the daemon nothing)")
    p.add_argument("--no-wait", action="store_true", help="queue it and return (see it later with --show ID)")
    p.add_argument("--no-diff", action="store_true", help="leave out the diffs")
    p.add_argument("--json", action="store_true", help="print the preview as JSON")
    p.add_argument("--timeout", type=float, default=900, metavar="SECONDS", help="wait at most this long (default 900)")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "where",
        "each environment and host that runs a commit, tree or release candidate, and since when",
        "Given a commit, a tree or rc/NAME, list each environment and host that runs its tree now (its newest\n"
        "deployment there that reached the host ran it), since when and by which deployment. Reads the state\n"
        "database only.",
        cmd_where,
    )
    p.add_argument("what", metavar="COMMIT|TREE|rc/NAME", help="what to look for")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "hosts",
        "what each host of an environment runs; trust their SSH host keys (prints fingerprints first)",
        "ENV: per host, the tree it runs, when it was deployed, the last drift check and drift (the state database).\n"
        "trust ENV: read ENV's inventory from its branch head (in the sandbox, as a deployment does), ask each\n"
        "SSH host for its host keys with ssh-keyscan, print their fingerprints and whether they are new or\n"
        "changed, and after confirmation record them in the known_hosts file playbook runs check against\n"
        "(ssh.known_hosts in the config). Exit code 1 if a host did not answer or nothing was recorded (0 when\n"
        "every host's keys were recorded already). Before an environment's first promotion its branch has no\n"
        "inventory: --ref names what would be promoted (e.g. --ref staging).",
        cmd_hosts,
    )
    p.add_argument("action", metavar="trust|ENV", help="trust: record the hosts' current keys; ENV: list its hosts")
    p.add_argument("env", metavar="ENV", nargs="?", help="with trust: environment name, e.g. production")
    p.add_argument("--json", action="store_true", help="with ENV: print JSON")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--yes", action="store_true", help="record without asking (check the fingerprints some other way)")
    p.add_argument(
        "--ref",
        metavar="REF",
        help="read ENV's inventory from this commit or branch instead of ENV's branch head (the tree that would be promoted)",
    )
