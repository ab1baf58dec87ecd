"""The core: where a branch head becomes a deployment. Pure logic behind ports (core/ports.py); no adapter imported.

Kept empty on purpose: the hook imports `gitopsd.core.errors`, and a package's __init__ runs first.
"""
