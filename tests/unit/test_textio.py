from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from refusals import refused, unblock  # tests/unit/refusals.py

from ml.errors import RecipeError
from ml.textio import (
    MAX_ALIASES,
    MAX_DEPTH,
    check_text,
    decode_text,
    elide,
    parse_json,
    parse_yaml,
    read_text,
)
from ml.yamlio import format_validation_error, read_yaml

HUGE = "x" * 100_000  # a 100 KB value: every message quoting it must stay one short line


# -- files ---------------------------------------------------------------------------------


def test_reads_a_regular_file_and_drops_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_text(path, "a.yaml", max_bytes=100) == "a: 1\n"


def test_missing_file(tmp_path: Path) -> None:
    message = refused(lambda: read_text(tmp_path / "nope", "nope.yaml", max_bytes=10))
    assert message == "nope.yaml: file not found"


def test_directory_is_refused(tmp_path: Path) -> None:
    message = refused(lambda: read_text(tmp_path, "cfg", max_bytes=10))
    assert message == "cfg: not a regular file (it is a directory)"


@pytest.mark.parametrize("via_symlink", [False, True])
def test_fifo_is_refused_without_hanging(tmp_path: Path, via_symlink: bool) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    path = fifo
    if via_symlink:
        path = tmp_path / "link.yaml"
        path.symlink_to(fifo)
    try:
        message = refused(lambda: read_text(path, "pipe.yaml", max_bytes=10))
    finally:
        unblock(fifo)
    assert message == "pipe.yaml: not a regular file (it is a FIFO)"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_device_is_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} is not available")
    message = refused(lambda: read_text(device, device, max_bytes=10))
    assert message == f"{device}: not a regular file (it is a character device)"


def test_symlink_to_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path)
    message = refused(lambda: read_text(tmp_path / "link", "link", max_bytes=10))
    assert message == "link: not a regular file (it is a directory)"


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("x" * 101)
    assert read_text(path, "big.yaml", max_bytes=101) == "x" * 101
    message = refused(lambda: read_text(path, "big.yaml", max_bytes=100))
    assert message == "big.yaml: 101 bytes is over the 100-byte limit"


def test_invalid_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    message = refused(
        lambda: read_text(path, "latin1.yaml", max_bytes=100, error=RecipeError), RecipeError
    )
    assert message == "latin1.yaml: not valid UTF-8 at byte 9"


def test_nul_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"name: a\x00b\n")
    message = refused(lambda: read_text(path, "nul.yaml", max_bytes=100))
    assert message == "nul.yaml: NUL byte at byte 7 (not a text file)"
    assert refused(lambda: decode_text(b"ab\x00", "body")) == (
        "body: NUL byte at byte 2 (not a text file)"
    )


def test_text_without_a_file_has_the_same_limits() -> None:
    assert check_text("{}", "--opt", max_chars=2) == "{}"
    assert refused(lambda: check_text("{} ", "--opt", max_chars=2)) == (
        "--opt: 3 characters is over the 2 limit"
    )
    assert refused(lambda: check_text("a\x00", "--opt", max_chars=9)) == (
        "--opt: NUL character at offset 1"
    )
    # undecodable bytes of an argument or a variable reach Python as lone surrogates
    assert refused(lambda: check_text("ab\udcff", "--opt", max_chars=9)) == (
        "--opt: not valid UTF-8 text at offset 2"
    )


# -- YAML ----------------------------------------------------------------------------------

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_yaml_alias_bomb_is_refused_not_expanded() -> None:
    started = time.monotonic()
    message = refused(lambda: parse_yaml(BILLION_LAUGHS, "bomb.yaml"))
    assert time.monotonic() - started < 1
    assert message.startswith("bomb.yaml: line ")
    assert f"more than {MAX_ALIASES} alias references" in message


def test_yaml_few_aliases_that_expand_hugely_are_refused() -> None:
    text = "a: &a [" + "1, " * 10_000 + "]\nb: [" + "*a, " * 20 + "]\n"
    message = refused(lambda: parse_yaml(text, "wide.yaml"))
    assert message == "wide.yaml: expands to more than 100,000 values through its aliases"


def test_yaml_aliases_and_merge_keys_in_moderation_still_work() -> None:
    text = "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\nlists: &l [1, 2]\nmore: [*l, *l]\n"
    assert parse_yaml(text, "ok.yaml") == {
        "base": {"x": 1},
        "d": {"x": 1, "y": 2},
        "lists": [1, 2],
        "more": [[1, 2], [1, 2]],
    }


def test_yaml_recursive_alias_is_refused() -> None:
    message = refused(lambda: parse_yaml("a: &a [*a]\n", "loop.yaml"))
    assert message == "loop.yaml: line 1, column 4: an alias refers to a node that contains it"


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "{" * 100_000,
        "".join("  " * i + f"k{i}:\n" for i in range(200)),
        "".join("  " * i + "-\n" for i in range(200)),
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "block-sequences"],
)
def test_yaml_deep_nesting_is_refused(text: str) -> None:
    message = refused(lambda: parse_yaml(text, "deep.yaml"))
    assert message.startswith("deep.yaml: line ")
    assert message.endswith(f"nested deeper than {MAX_DEPTH} levels")


def test_yaml_nesting_at_the_bound_is_fine() -> None:
    assert parse_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "ok.yaml") is not None


def test_yaml_nesting_through_aliases_is_bounded() -> None:
    text = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    message = refused(lambda: parse_yaml(text, "deep.yaml"))
    assert message.endswith(f"nested deeper than {MAX_DEPTH} levels through aliases")


def test_yaml_duplicate_key_is_refused() -> None:
    message = refused(lambda: parse_yaml("a: 1\nb: 2\na: 3\n", "dup.yaml"))
    assert message == "dup.yaml: line 3, column 1: duplicate key 'a' (first at line 1)"


def test_yaml_keys_must_be_strings_unless_allowed() -> None:
    message = refused(lambda: parse_yaml("on: 1\n", "keys.yaml"))
    assert (
        message == "keys.yaml: line 1, column 1: key 'on' is read as bool, not a string; quote it"
    )
    assert parse_yaml("weights: {0: 1, 1: 5}\n", "r.yaml", string_keys=False) == {
        "weights": {0: 1, 1: 5}
    }
    message = refused(lambda: parse_yaml("? [a, b]\n: 1\n", "r.yaml", string_keys=False))
    assert message == "r.yaml: line 1, column 3: a key must be a plain value, not a list or mapping"


def test_yaml_nul_in_an_escaped_value_is_refused() -> None:
    message = refused(lambda: parse_yaml('path: "data/a\\0.duckdb"\n', "nul.yaml"))
    assert message == "nul.yaml: line 1, column 7: NUL character in a value"


def test_yaml_python_tags_are_refused_clearly() -> None:
    text = "model: !!python/object/apply:os.system ['true']\n"
    message = refused(lambda: parse_yaml(text, "tag.yaml", error=RecipeError), RecipeError)
    assert message.startswith(
        "tag.yaml: YAML syntax error at line 1, column 8: could not determine"
    )
    assert message.endswith("(tags that build objects are not allowed)")


def test_yaml_syntax_errors_keep_their_position() -> None:
    message = refused(lambda: parse_yaml("a: [1\nb: 2\n", "bad.yaml"))
    assert message.startswith("bad.yaml: YAML syntax error at line ")
    message = refused(lambda: parse_yaml("a: 1\n---\nb: 2\n", "two.yaml"))
    assert message == (
        "two.yaml: YAML syntax error at line 2, column 1: "
        "expected a single document in the stream but found another document"
    )


def test_yaml_integer_past_the_digit_limit_is_one_line() -> None:
    message = refused(lambda: parse_yaml("n: " + "9" * 5000 + "\n", "n.yaml"))
    assert message.startswith("n.yaml: a number has more than ")


def test_read_yaml_composes_reader_and_parser(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("a: 1\n")
    assert read_yaml(path) == {"a": 1}
    path.write_text(BILLION_LAUGHS)
    assert "alias references" in refused(
        lambda: read_yaml(path, RecipeError, "r.yaml"), RecipeError
    )


# -- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000],
    ids=["unclosed-lists", "unclosed-objects", "closed-lists"],
)
def test_json_deep_nesting_is_refused_before_parsing(text: str) -> None:
    message = refused(lambda: parse_json(text, "body"))
    assert message.startswith(f"body: nested deeper than {MAX_DEPTH} levels at line 1 column ")


def test_json_nesting_at_the_bound_and_brackets_inside_strings_are_fine() -> None:
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "body") is not None
    assert parse_json('{"a": "' + "[" * 1000 + '\\""}', "body") == {"a": "[" * 1000 + '"'}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"a": "\\ud800"}', "ud800"),
        ('{"a": ["x", "y\\uDC00z"]}', "udc00"),
        ('{"\\udbff": 1}', "udbff"),
        ('["\\ude00\\ud83d"]', "ude00"),  # a pair in the wrong order is two halves
    ],
)
def test_json_unpaired_surrogate_escapes_are_refused(text: str, code: str) -> None:
    assert refused(lambda: parse_json(text, "--context-params")) == (
        f"--context-params: a string escapes an unpaired UTF-16 surrogate (\\{code}), "
        "which is not text"
    )


def test_json_surrogate_pairs_and_escaped_backslashes_are_text() -> None:
    assert parse_json('["\\ud83d\\ude00", "\\\\ud800"]', "p") == ["\U0001f600", "\\ud800"]


def test_yaml_unpaired_surrogate_escape_is_refused() -> None:
    assert parse_yaml('a: "\\ud83d\\ude00"\n', "r.yaml") == {"a": "\U0001f600"}
    message = refused(lambda: parse_yaml('a: "x"\nb: ["\\udc00"]\n', "r.yaml"))
    assert message == (
        "r.yaml: line 2, column 5: a value escapes an unpaired UTF-16 surrogate (\\udc00), "
        "which is not text"
    )


def test_json_duplicate_keys_are_refused() -> None:
    message = refused(lambda: parse_json('{"a": {"b": 1, "b": 2}}', "--context-params"))
    assert message == "--context-params: duplicate key 'b' in a JSON object"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": NaN}', "NaN is not a JSON number (numbers must be finite)"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number (numbers must be finite)"),
        ('{"a": 1e400}', "number 1e400 is out of range (numbers must be finite)"),
    ],
)
def test_json_non_finite_numbers_are_refused(text: str, problem: str) -> None:
    assert refused(lambda: parse_json(text, "body")) == f"body: {problem}"
    assert parse_json(text, "body", allow_nan=True)["a"] != 0


def test_json_syntax_errors_name_the_position() -> None:
    message = refused(lambda: parse_json("{campaign_id: 1}", "--context-params"))
    assert message == (
        "--context-params: invalid JSON at line 1 column 2: "
        "Expecting property name enclosed in double quotes"
    )
    message = refused(lambda: parse_json('"a\x00"', "body"))
    assert message == "body: invalid JSON at line 1 column 3: Invalid control character"
    message = refused(lambda: parse_json("9" * 5000, "body"))
    assert message.startswith("body: invalid JSON: a number has more than ")


def test_json_raises_the_callers_error_class() -> None:
    refused(lambda: parse_json("[", "r", error=RecipeError), RecipeError)


# -- messages ------------------------------------------------------------------------------


def test_elide_keeps_short_text_and_cuts_long_text() -> None:
    assert elide("short") == "short"
    assert elide("two\nlines") == "two lines"
    cut = elide(HUGE, 80)
    assert len(cut) == 80 and cut.endswith("... (100,000 chars)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int


@pytest.mark.parametrize(
    "make",
    [
        lambda: read_text("/nonexistent/" + HUGE[:200], "/nonexistent/" + HUGE, max_bytes=1),
        lambda: parse_json('{"' + HUGE + '": 1, "' + HUGE + '": 2}', "body"),
        lambda: parse_json("{" + HUGE + "}", "body"),
        lambda: parse_yaml(f"{HUGE}: 1\n{HUGE}: 2\n", "dup.yaml"),
        lambda: parse_yaml(f"a: !!python/object:{HUGE} x\n", "tag.yaml"),
        lambda: parse_yaml(f"a: [{HUGE}\n", HUGE + ".yaml"),
    ],
    ids=["long-path", "json-dup-key", "json-syntax", "yaml-dup-key", "yaml-tag", "long-label"],
)
def test_every_message_is_one_short_line_with_a_100kb_value(make: Callable[[], Any]) -> None:
    refused(make)


def test_validation_messages_elide_a_100kb_value() -> None:
    for data in ({"port": HUGE}, {"port": 1, HUGE: 1}):
        with pytest.raises(ValidationError) as err:
            _Model.model_validate(data)
        message = format_validation_error(err.value, "config/dev.yaml", "from X")
        assert "\n" not in message and len(message) < 300, message
        assert message.startswith("config/dev.yaml: ")
