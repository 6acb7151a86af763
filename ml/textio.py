"""One hardened reader for every text a user hands us: recipes, config files, `.env`,
`--context-params` and request bodies.

A file must be a regular file under a size cap, valid UTF-8 and free of NUL bytes; YAML may not
expand aliases past a small bound or nest deeply; JSON may not repeat a key, nest deeply or
spell NaN. Every refusal is one line under ~300 characters that names the input and where in
it, with long values elided, raised as the caller's `MLError` subclass.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

from ml.errors import ConfigError, MLError

MAX_DEPTH = 64  # nesting of mappings and sequences, in YAML and in JSON
MAX_ALIASES = 32  # YAML alias references (*name) in one document
MAX_NODES = 100_000  # YAML values once aliases are expanded
MAX_MESSAGE = 300  # characters in one error line

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# A JSON string (escapes included) or one bracket: what the depth pre-scan steps over.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)
# Half of a UTF-16 pair: JSON's and YAML's \uD800-\uDFFF escapes decode to one when unpaired
# (and Python keeps undecodable bytes of arguments and variables as one); it is not text and
# cannot be written as UTF-8, to a warehouse, a log or a response.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class _Refused(Exception):
    """Raised inside parser hooks; turned into the caller's error class with its label."""


def elide(text: str, limit: int = 80) -> str:
    """`text` on one line, cut to at most `limit` characters with a note of its full length."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    note = f"... ({len(flat):,} chars)"
    return flat[: max(limit - len(note), 1)] + note


def _fail(error: type[MLError], label: str, detail: str) -> MLError:
    return error(elide(f"{elide(label, 100)}: {detail}", MAX_MESSAGE))


# -- files ---------------------------------------------------------------------------------


def read_text(
    path: Path | str, label: str, *, max_bytes: int, error: type[MLError] = ConfigError
) -> str:
    """The file's text, if it is a regular file of at most `max_bytes` of NUL-free UTF-8.

    Directories, FIFOs, sockets and devices (or symlinks to them) are refused before they are
    read: a FIFO is opened non-blocking, so a pipe with no writer never hangs the caller.
    """
    try:
        _regular_file(os.stat(path), label, max_bytes, error)  # refuse without opening
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _fail(error, label, "file not found") from None
    except OSError as exc:
        raise _fail(error, label, f"cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        _regular_file(os.fstat(fd), label, max_bytes, error)  # what was opened, not the name
        try:
            data = handle.read(max_bytes + 1)  # the file may have grown since fstat
        except OSError as exc:
            raise _fail(error, label, f"cannot read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise _fail(error, label, f"larger than the {max_bytes:,}-byte limit")
    return decode_text(data, label, error=error)


def _regular_file(st: os.stat_result, label: str, max_bytes: int, error: type[MLError]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _fail(error, label, f"not a regular file (it is {_file_kind(st.st_mode)})")
    if st.st_size > max_bytes:
        raise _fail(error, label, f"{st.st_size:,} bytes is over the {max_bytes:,}-byte limit")


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a file")


def decode_text(data: bytes, label: str, *, error: type[MLError] = ConfigError) -> str:
    """UTF-8 without NUL bytes (a leading byte-order mark is dropped); errors give the offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(error, label, f"not valid UTF-8 at byte {exc.start}") from None
    if (nul := data.find(b"\x00")) != -1:
        raise _fail(error, label, f"NUL byte at byte {nul} (not a text file)")
    return text.removeprefix("\ufeff")


def check_text(text: str, label: str, *, max_chars: int, error: type[MLError] = ConfigError) -> str:
    """The same limits for text that arrives without a file (an option or a variable)."""
    if len(text) > max_chars:
        raise _fail(error, label, f"{len(text):,} characters is over the {max_chars:,} limit")
    if (nul := text.find("\x00")) != -1:
        raise _fail(error, label, f"NUL character at offset {nul}")
    if bad := _SURROGATE.search(text):
        raise _fail(error, label, f"not valid UTF-8 text at offset {bad.start()}")
    return text


def unpaired_surrogate(text: str, parsed: Any) -> str | None:
    """What to say when JSON `text` escapes half a UTF-16 pair that `parsed` (its value) kept
    unpaired, or None; the parsed value is walked only when the text has such an escape."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    stack = [parsed]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if bad := _SURROGATE.search(value):
                code = f"\\u{ord(bad.group()):04x}"
                return f"a string escapes an unpaired UTF-16 surrogate ({code}), which is not text"
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


# -- YAML ----------------------------------------------------------------------------------


def parse_yaml(
    text: str, label: str, *, error: type[MLError] = ConfigError, string_keys: bool = True
) -> Any:
    """One YAML document with the safe loader, refusing alias bombs, deep nesting, duplicate or
    complex keys, NUL characters in values and (with `string_keys`) keys that are not strings."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node, string_keys)
        return loader.construct_document(node)
    except _Refused as exc:
        raise _fail(error, label, str(exc)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and problem.startswith("but "):  # "expected X" + "but found Y"
            problem = f"{exc.context} {problem}"
        problem = elide(problem, 160)
        if "could not determine a constructor" in problem:
            problem += " (tags that build objects are not allowed)"
        raise _fail(error, label, f"YAML syntax error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(error, label, f"invalid YAML: {elide(str(exc), 160)}") from None
    except RecursionError:  # a backstop: the bounds above stop nesting long before this
        raise _fail(error, label, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise _fail(error, label, _value_problem(exc)) from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, counting alias references and nesting while it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner reads ahead through a run of `[`/`{`: stop it before the composer would.
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"{_at(self.get_mark())}: nested deeper than {MAX_DEPTH} levels")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(
                    f"{_at(event.start_mark)}: more than {MAX_ALIASES} alias references (*name); "
                    "refused rather than expanded"
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"{_at(event.start_mark)}: nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _value_problem(exc: ValueError) -> str:
    if "digits" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits():,} digits"
    return f"invalid value ({elide(str(exc), 120)})"


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_graph(root: yaml.Node, string_keys: bool) -> None:
    """Walk the composed nodes once (shared ones once), without recursion: the document's size
    and depth as if its aliases were expanded, alias cycles, keys, and NUL characters."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # the path from the root to the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            size[key] = 1 + sum(size[id(kid)] for kid in kids)
            depth[key] = 1 + max((depth[id(kid)] for kid in kids), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES:,} values through its aliases")
            if depth[key] > MAX_DEPTH:
                raise _Refused(
                    f"{_at(node.start_mark)}: nested deeper than {MAX_DEPTH} levels through aliases"
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise _Refused(f"{_at(node.start_mark)}: an alias refers to a node that contains it")
        _check_node(node, string_keys)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_node(node: yaml.Node, string_keys: bool) -> None:
    if isinstance(node, yaml.ScalarNode) and "\x00" in node.value:
        raise _Refused(f"{_at(node.start_mark)}: NUL character in a value")
    if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):
        # PyYAML leaves an escaped pair ("\\ud83d\\ude00") as its two halves: join them
        node.value = node.value.encode("utf-16-le", "surrogatepass").decode(
            "utf-16-le", "surrogatepass"
        )
        if bad := _SURROGATE.search(node.value):
            raise _Refused(
                f"{_at(node.start_mark)}: a value escapes an unpaired UTF-16 surrogate "
                f"(\\u{ord(bad.group()):04x}), which is not text"
            )
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[tuple[str, str], int] = {}  # (tag, text) -> line
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        where = _at(key_node.start_mark)
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(f"{where}: a key must be a plain value, not a list or mapping")
        shown = elide(repr(key_node.value), 60)
        if string_keys and key_node.tag != _STR_TAG:
            kind = key_node.tag.rsplit(":", 1)[-1]
            raise _Refused(f"{where}: key {shown} is read as {kind}, not a string; quote it")
        ident = (key_node.tag, key_node.value)
        if ident in seen:
            raise _Refused(f"{where}: duplicate key {shown} (first at line {seen[ident] + 1})")
        seen[ident] = key_node.start_mark.line


# -- JSON ----------------------------------------------------------------------------------


def parse_json(
    text: str, label: str, *, error: type[MLError] = ConfigError, allow_nan: bool = False
) -> Any:
    """Strict JSON: duplicate keys refused, nesting bounded before parsing (so deep input cannot
    exhaust the stack), and NaN, Infinity and overflowing numbers refused unless `allow_nan`."""
    hooks: dict[str, Any] = {"object_pairs_hook": _unique_keys}
    if not allow_nan:
        hooks.update(parse_constant=_no_constant, parse_float=_finite_float)
    try:
        _check_json_depth(text)
        value = json.loads(text, **hooks)
        if problem := unpaired_surrogate(text, value):
            raise _Refused(problem)
        return value
    except _Refused as exc:
        raise _fail(error, label, str(exc)) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        problem = elide(exc.msg.removesuffix(" at"), 120)  # "Invalid control character at"
        raise _fail(error, label, f"invalid JSON at {where}: {problem}") from None
    except RecursionError:  # a backstop: the pre-scan stops nesting long before this
        raise _fail(error, label, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise _fail(error, label, f"invalid JSON: {_value_problem(exc)}") from None


def _check_json_depth(text: str) -> None:
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                pos = token.start()
                line = text.count("\n", 0, pos) + 1
                column = pos - text.rfind("\n", 0, pos)
                raise _Refused(
                    f"nested deeper than {MAX_DEPTH} levels at line {line} column {column}"
                )
        elif char in "]}":
            depth -= 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {elide(repr(key), 60)} in a JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number (numbers must be finite)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused(f"number {elide(literal, 40)} is out of range (numbers must be finite)")
    return value
