"""Setting a server up: `init` (bootstrap), `install-hooks`, `install-service`, `doctor`, and `make demo`.

Below the command line and the daemon (which refreshes the hooks' settings at start), above the services.
"""
