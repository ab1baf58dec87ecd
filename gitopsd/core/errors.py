"""One error taxonomy: every error gitopsd raises on purpose is a GitopsdError, of the kind the caller acts on.

The reconciler acts on the kind (Flux's contract): a StalledError needs a person and is not retried,
a TransientError is retried with backoff (a look soon again, no traceback in the log); anything else
is a failed attempt, retried too. The CLI
prints any GitopsdError as one line (`--debug` adds the traceback). Errors of pygit2, sqlite3,
ansible-runner and git's processes are translated into these in the one module that talks to each.

Stdlib only and no imports at all: the pre-receive hook imports this on every push.
"""


class GitopsdError(Exception):
    """Base of gitopsd's own errors; the message is one line for an operator: what, where, what to do."""


class ConfigurationError(GitopsdError):
    """The server configuration (or something it names) is wrong; a person fixes the file."""


class StalledError(GitopsdError):
    """Retrying the same thing cannot help (a tree that cannot be exported, a path leading out): a person must act."""


class TransientError(GitopsdError):
    """Worth retrying with backoff: the next attempt may succeed (a busy database, a host not answering)."""


class StoreError(GitopsdError):
    """The state database cannot be used; the message says which file, why and what to do (adapters/storeerrors.py).

    Raised as one of the kinds above too: busy or full is transient, permission is configuration, damaged is stalled.
    """


class GitError(GitopsdError):
    """A git command or pygit2 failed; the message carries git's own words."""


class UserError(GitopsdError):
    """A command line mistake or a refused command: printed as `gitopsd: error: ...`, exit code 1."""
