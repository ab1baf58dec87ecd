"""Server-side configuration: parse (safe YAML only) -> normalize -> validate, every problem at once.

reading.py reads the file (the only module that imports PyYAML), problems.py collects what is wrong with its
file:line, one module per group of sections parses and checks its keys (top.py puts them together), and
edit.py is `gitopsd init`'s edit of the file as text. docs/configuration.md is generated from the key sets
(reference.py, tools/gen_config_docs.py).
"""

from __future__ import annotations

from ..core.settings import Config, Environment, HttpCheck, Notify, PrometheusCheck, Repository, Rollout, Verify
from .edit import ConfigEditError, add_repository, repository_entry
from .problems import ConfigError, Problem
from .reading import load, read_yaml, write_yaml

# Re-exported: the settings classes are what `load` returns.
__all__ = [
    "Config",
    "ConfigEditError",
    "ConfigError",
    "Environment",
    "HttpCheck",
    "Notify",
    "PrometheusCheck",
    "Problem",
    "Repository",
    "Rollout",
    "Verify",
    "add_repository",
    "load",
    "read_yaml",
    "repository_entry",
    "write_yaml",
]
