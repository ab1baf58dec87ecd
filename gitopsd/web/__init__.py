"""The web dashboard: server-rendered pages (Jinja2 + htmx) on the daemon's HTTP server (docs/web.md)."""
