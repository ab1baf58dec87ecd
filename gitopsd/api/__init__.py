"""The HTTP API: statuses from CI, reads for scripts and the dashboard (docs/api.md)."""
