"""`gitopsd init`'s next steps name this server in the clone URL, and say where that name came from.

Real: `gitopsd init` in a temp folder with a git user other than the one running it (the user need
not exist for the hint), its printed lines as an operator reads them.
"""

from __future__ import annotations

import socket

from tests.support import GITOPSD, run


def test_the_clone_url_init_prints_names_this_machine_and_says_so(short_tmp):
    repo, config = short_tmp / "shop.git", short_tmp / "gitopsd.yml"
    config.write_text(f"state_dir: {short_tmp / 'state'}\nruntime_dir: {short_tmp / 'run'}\nrepositories: []\n")
    out = run(
        [*GITOPSD, "init", str(repo), "--config", str(config), "--git-user", "gt-ih-pusher"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(short_tmp)},
    ).stdout
    clone = next(line for line in out.splitlines() if line.lstrip().startswith("git clone "))
    fqdn = socket.getfqdn()
    host = fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()
    assert clone == (
        f"  git clone gt-ih-pusher@{host}:{repo} && cd shop   # {host}: this server's name as it "
        "knows it; use the one your clones reach it by"
    ), clone
