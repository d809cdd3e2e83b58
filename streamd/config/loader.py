"""YAML → Config, refusing anything that is not a plain, small configuration file.

A config file is read by people and by `streamd check` on machines that also run cameras, so a bad
file must fail fast, in bounded memory, naming the problem and its line:
- at most MAX_CONFIG_BYTES, UTF-8 (a BOM is accepted);
- nesting at most MAX_DEPTH deep (PyYAML composes recursively: a deep file would otherwise end in
  a RecursionError);
- at most MAX_ALIASES aliases, no alias inside its own anchor, and at most MAX_NODES values /
  MAX_CHARS characters once aliases are expanded (a "billion laughs" file is a few hundred bytes
  that expand to 10⁹ values);
- no key twice in one mapping (YAML would silently keep the last one: two cameras of one name).

Any string may contain `${ENV_VAR}`, expanded after parsing. Messages never carry a secret: the
YAML parser's source snippet is left out, and every message is scrubbed of the file's secrets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streamd.config.root import Config
from streamd.config.secrets import SecretScrubber, secrets_in
from streamd.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 40
MAX_ALIASES = 200
MAX_NODES = 100_000
MAX_CHARS = 4 * 1024 * 1024

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """The file breaks one of the loader's limits; `line` is 1-based, or None."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _line(node_or_mark: Node | yaml.Mark | None) -> int | None:
    if node_or_mark is None:
        return None
    mark = node_or_mark.start_mark if isinstance(node_or_mark, Node) else node_or_mark
    return mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and aliases and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def _event_line(self) -> int | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        return None if mark is None else mark.line + 1

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(
                    f"more than {MAX_ALIASES} aliases (*name): a config needs far fewer",
                    self._event_line(),
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", self._event_line())
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:  # stub says dict; it is str
        node: MappingNode = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int | None] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            ident = (key.tag, key.value)
            if ident in first:
                raise _Refused(
                    f"duplicate key {key.value!r} (first at line {first[ident]}); "
                    "YAML would silently keep only the last one",
                    _line(key),
                )
            first[ident] = _line(key)
        return node


def _check_expansion(root: Node) -> None:
    """Refuse alias cycles and files that expand beyond MAX_NODES values or MAX_CHARS chars.

    Sizes are memoised per node, so a bomb is measured in time linear in its (small) text.
    """
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def size(node: Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused("an alias refers to its own anchor (a recursive structure)", _line(node))
        active.add(key)
        nodes, chars = 1, 0
        if isinstance(node, ScalarNode):
            chars = len(node.value)
        elif isinstance(node, SequenceNode):
            for child in node.value:
                n, c = size(child)
                nodes, chars = nodes + n, chars + c
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                for child in (k, v):
                    n, c = size(child)
                    nodes, chars = nodes + n, chars + c
        active.discard(key)
        if nodes > MAX_NODES or chars > MAX_CHARS:
            raise _Refused(
                f"aliases expand this file beyond {MAX_NODES} values or {MAX_CHARS} characters "
                "(an alias bomb?)",
                _line(node),
            )
        sizes[key] = (nodes, chars)
        return nodes, chars

    # Recursion depth: MAX_DEPTH per level of alias, and MAX_ALIASES bounds the levels.
    size(root)


def _compose(text: str, source: str) -> tuple[Node | None, Any]:
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root)
        return root, loader.construct_document(root)
    except _Refused as exc:
        where = f"{source}:{exc.line}" if exc.line else source
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        # str(exc) would quote the offending source line, which may hold a password.
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


def _expand_env(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _node_line(root: Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the YAML node at `loc`, or of its deepest existing parent."""
    node = root
    line = _line(node)
    for key in loc:
        if isinstance(node, MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == str(key):
                    # an unknown key's own line is more useful than its value's
                    line = _line(k)
                    nxt = v
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
            line = _line(node)
        else:
            return line
    return line


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config; every problem is reported with its key and line."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes: not a config file?")
    root, data = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    scrub = SecretScrubber(secrets_in(data))
    try:
        data = _expand_env(data, "")
        scrub.add(secrets_in(data))
        return Config.model_validate(data)
    except ConfigError as exc:
        raise ConfigError(scrub(str(exc))) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            line = _node_line(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{where}: {_format_loc(loc)}: {msg}")
        raise ConfigError(scrub("\n".join(lines))) from None


def read_config_text(path: Path) -> str:
    """The file's text, or a ConfigError naming why it cannot be a config file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes: not a config file?")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "save the file as UTF-8"
        ) from None


def load_config(path: Path) -> Config:
    return parse_config(read_config_text(path), str(path))
