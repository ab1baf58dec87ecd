"""What the command line, the HTTP API, the dashboard and the daemon do, shared by all of them.

Operator actions (operations), the human gates (releases), rollbacks (revert), status and read models,
metrics, DORA figures, execution nodes, SSH host trust, API tokens, and the ledger read back from notes.
Below the front ends and the daemon, above the config, the adapters, the gate and the core.
"""
