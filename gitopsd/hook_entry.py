"""What hooks/pre-receive runs: `python -I -S gitopsd/hook_entry.py --config FILE [--database FILE]`.

`-I` keeps the pusher's environment variables (PYTHONPATH, ...) and the working directory out of
Python's import path; `-S` skips site-packages, which saves about 20 ms per push. The hook needs
only the standard library and this package, whose folder is added to the path here, after the
standard library's, so nothing installed beside gitopsd can stand in for a standard module.

The gate imports nothing above it: the two parts it needs from above, and only on some pushes, are
handed in from here (the config's YAML when the snapshot is stale, the SSH signature check).
"""

from __future__ import annotations

import os
import sys

sys.path.append(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from gitopsd.gate.receive import main  # noqa: E402  (the path must be set first)

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from gitopsd.core.settings import Config
    from gitopsd.gate.sshsig import Check


def load_config(path: str) -> Config:
    """config.load for the hook's slow path (gate/configfile.py); PyYAML lives in site-packages, which -S left out."""
    import site

    site.main()
    from gitopsd.config import load

    return load(path)


def ssh_crypto() -> Check | None:
    """adapters/signing.verify_ssh (`cryptography`) for gate/sshsig.py, imported only when a push has commits to
    check; None when it cannot be imported (git and ssh-keygen check then)."""
    try:
        from gitopsd.adapters.signing import verify_ssh
    except ImportError:
        # The hook runs with -S (no site-packages on the path): add this interpreter's, after the standard library.
        import site

        bin_folder = os.path.dirname(sys.executable)
        venv = [p for p in (bin_folder, os.path.dirname(bin_folder)) if os.path.exists(os.path.join(p, "pyvenv.cfg"))]
        prefixes = [os.path.dirname(bin_folder)] if venv else []
        sys.path += [p for p in site.getsitepackages([*prefixes, sys.prefix]) if p not in sys.path]
        try:
            from gitopsd.adapters.signing import verify_ssh
        except ImportError:
            return None
    return verify_ssh


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], load_config, ssh_crypto))
