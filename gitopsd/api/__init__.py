"""The HTTP API: statuses from CI, reads for scripts and the dashboard (README, "HTTP API")."""
