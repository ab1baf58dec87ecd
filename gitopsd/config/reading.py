"""Reading the config: the file, safe YAML with line numbers, every problem at once (load, read_yaml).

This is the only module that imports PyYAML. Policy lives here, on the server, never in pushed
content, so a push cannot loosen the rules that judge it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ConfigurationError
from ..core.settings import Config
from ..gate.snapshot import file_stamp
from .problems import ConfigError, Problem, _Checker
from .top import _normalize

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: same rules, faster
CONFIG_MAX = 10 * 2**20  # bytes: a real config is a few KiB; stops --config /dev/zero or a log file read whole
_MAX_NODES = 100_000  # far beyond any real config: stops a YAML alias bomb from expanding here
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _walk(root: yaml.Node | None) -> Iterator[tuple[str, int, yaml.Node]]:
    """Yield (key path like 'repositories[0].path', 1-based line, node) for each mapping value and sequence item.

    An alias makes a node appear in several places, or inside itself: loops are cut, and the walk
    stops after _MAX_NODES so that nested aliases cannot expand exponentially.
    """
    stack: list[tuple[str, yaml.Node, frozenset[int]]] = [("", root, frozenset())] if root is not None else []
    visited = 0
    while stack and visited < _MAX_NODES:
        path, node, ancestors = stack.pop()
        if id(node) in ancestors:
            continue
        inside = ancestors | {id(node)}
        children: list[tuple[str, int, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{path}.{key_node.value}" if path else str(key_node.value)
                children.append((key, key_node.start_mark.line + 1, value_node))
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", item.start_mark.line + 1, item) for i, item in enumerate(node.value)]
        for key, line, child in children:
            visited += 1
            yield key, line, child
        stack.extend((key, child, inside) for key, _, child in reversed(children))


def _line_index(node: yaml.Node | None) -> dict[str, int]:
    """Map each key path ('repositories[0].path') to its 1-based line in the file."""
    return {key: line for key, line, _ in _walk(node)}


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[str, int, int]]:
    """Keys given twice in one mapping, as (key path, line, first line): YAML would silently keep the last.

    Call before the document is constructed: constructing resolves merge keys (`<<: *base`) by
    copying the merged keys into the mapping, which would look like duplicates.
    """
    mappings = [("", root)] if isinstance(root, yaml.MappingNode) else []
    mappings += [(key, node) for key, _, node in _walk(root) if isinstance(node, yaml.MappingNode)]
    found = []
    for path, mapping in mappings:
        first: dict[tuple[str, Any], int] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            name = (key_node.tag, key_node.value)
            if name in first:
                found.append((f"{path}.{key_node.value}" if path else str(key_node.value), line, first[name]))
            else:
                first[name] = line
    return sorted(found, key=lambda f: f[1])


def load(path: Path | str, *, writable_folders: bool = False) -> Config:
    """Given a config file, return the validated Config. Raise ConfigError listing every problem.

    With `writable_folders`, also require that this process's user can write (or create) state_dir
    and runtime_dir: true for the daemon and `check-config`, not for hooks and read-only commands,
    which run as other users.
    """
    source = Path(path)
    file = str(source)
    stamp = file_stamp(file)  # before reading: an edit in between makes the stamp stale, never wrong
    text = _read_text(source)
    try:
        # One parse: the node tree gives line numbers, then the same loader builds the data (safe tags only).
        loader = _SafeLoader(text)
        try:
            node = loader.get_single_node()
            duplicates = _duplicate_keys(node)  # before constructing, which rewrites merge keys in the tree
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {detail}")]) from exc
    check = _Checker(file, _line_index(node))
    for key, line, first in duplicates:
        check.problems.append(Problem(file, line, key, f"duplicate key (first at line {first})"))
    config = _normalize(raw if raw is not None else {}, source, check, writable_folders)
    if check.problems:
        raise ConfigError(check.problems, replace(config, stamp=stamp))
    return replace(config, stamp=stamp)


def _read_text(source: Path) -> str:
    """The config file's text. Raise ConfigError, in one line, for a file that cannot be read, is not a regular
    file (/dev/zero, a FIFO: reading would never end), is over CONFIG_MAX bytes, or is not UTF-8 (with its line)."""
    file = str(source)
    try:  # O_NONBLOCK: opening a FIFO does not wait for a writer
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([Problem(file, None, "", "is not a regular file; give --config a YAML file")])
            data = handle.read(CONFIG_MAX + 1)
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read config: {exc.strerror or exc}")]) from exc
    if len(data) > CONFIG_MAX:
        raise ConfigError(
            [Problem(file, None, "", f"is over {CONFIG_MAX // 2**20} MiB; a gitopsd config is a few KiB: is it the right file?")]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = data.count(b"\n", 0, exc.start) + 1, exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(
            [Problem(file, line, "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); save it as UTF-8")]
        ) from exc


def read_yaml(text: str) -> Any:
    """Plain data from YAML text (safe tags only), for tools that read a config without validating it
    (install-service --root, the demo). Raise ConfigurationError for text that is not YAML."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 (safe tags only; libyaml's depth limit, as load has)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    except RecursionError as exc:  # found by fuzz/fuzz_tokens_file.py: `[[[[...` without libyaml
        raise ConfigurationError("invalid YAML: nested too deeply") from exc


def compose_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (lines and columns, for `gitopsd init`'s edits as text) and the plain data of YAML text.
    Raise ConfigurationError for text that is not YAML."""
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
        return root, (yaml.safe_load(text) if root is not None else {})
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc


def write_yaml(data: Any) -> str:
    """YAML text for plain data, keys in the given order."""
    return str(yaml.safe_dump(data, sort_keys=False))


def _indent(text: str, columns: int) -> str:
    return "".join(" " * columns + line if line.strip() else line for line in text.splitlines(keepends=True))


def _text_with_item(text: str, root: yaml.Node | None, item: str) -> str | None:
    """Return `text` with the YAML list `item` appended to its top-level `repositories:`; None if it cannot be."""
    if text and not text.endswith("\n"):
        text += "\n"
    value = None
    if isinstance(root, yaml.MappingNode):
        value = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "repositories"), None)
    elif root is not None:
        return None
    if value is None:
        return text + "repositories:\n" + _indent(item, 2)
    lines = text.splitlines(keepends=True)
    if isinstance(value, yaml.SequenceNode) and not value.flow_style:
        # After the last line of the last entry: comments and blank lines that follow belong to what comes next.
        dash = value.start_mark.column
        last = value.value[-1].start_mark.line
        for n in range(last + 1, min(value.end_mark.line + 1, len(lines))):
            stripped = lines[n].strip()
            if stripped and not stripped.startswith("#") and len(lines[n]) - len(lines[n].lstrip()) > dash:
                last = n
        return "".join(lines[: last + 1]) + _indent(item, dash) + "".join(lines[last + 1 :])
    if (isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null") or (
        isinstance(value, yaml.SequenceNode) and not value.value
    ):
        # `repositories:`, `repositories: ~` or `repositories: []`: the value goes, the list follows the key's line.
        start, end = value.start_mark.index, value.end_mark.index
        text = text[:start] + text[end:]
        lines = text.splitlines(keepends=True)
        at = value.start_mark.line
        lines[at] = lines[at].rstrip(" \t\n") + "\n" if "#" not in lines[at] else lines[at]
        return "".join(lines[: at + 1]) + _indent(item, 2) + "".join(lines[at + 1 :])
    return None
