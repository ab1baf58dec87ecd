"""Stdlib-only foundations under the hook's gate: the git command line and what a store error means.

The pre-receive hook starts a Python on every push, so what it shares with the daemon lives here,
below the gate and above the core, and imports nothing heavy (import-linter's layers contract).
"""
