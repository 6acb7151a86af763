"""What `ml` prints when it refuses: one `Error:` line, whatever went wrong (a usage mistake,
a model reference no store could hold, a library's native stack trace), and nothing at all
when the reader of its output goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from refusals import refused  # tests/unit/refusals.py

from ml.cli import BROKEN_PIPE_EXIT, main
from ml.errors import one_line
from ml.registry import ModelRef

ML = Path(sys.executable).parent / "ml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["score", "--model", "m", "--engine", "gpu"],
            "Error: Invalid value for '--engine': 'gpu' is not one of 'python', 'sql'. "
            "(see `ml score -h`)",
        ),
        (["train", "--nope"], "Error: No such option '--nope'. (see `ml train -h`)"),
        (
            ["train", "--recipe"],
            "Error: Option '--recipe' requires an argument. (see `ml train -h`)",
        ),
        (
            ["compile", "--model", "m"],
            "Error: Missing option '--dialect'. Choose from: duckdb, bigquery "
            "(see `ml compile -h`)",
        ),
    ],
)
def test_a_usage_mistake_is_one_line(args, message) -> None:
    result = CliRunner().invoke(main, args, prog_name="ml")
    assert result.exit_code == 2
    assert result.output.strip() == message


def test_a_closed_output_ends_quietly() -> None:
    """`ml ... | head -1`: the reader closed the pipe; no internal error, no complaint."""
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE
    try:
        done = subprocess.run(
            [str(ML), "score", "-h"], stdout=write, stderr=subprocess.PIPE, timeout=60, check=False
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (BROKEN_PIPE_EXIT, b"")


@pytest.mark.parametrize(
    ("run_id", "model", "message"),
    [
        (None, "m/abc", "--model 'm/abc': expected NAME, NAME@ALIAS or NAME/VERSION (a version is "
         "a number)"),
        (None, "a/b/c", "--model 'a/b/c': expected NAME, NAME@ALIAS or NAME/VERSION (a version is "
         "a number)"),
        (None, "m@", "--model 'm@': expected NAME, NAME@ALIAS or NAME/VERSION"),
        (None, "a" * 5000, "--model '" + "a" * 63 + "... (5,000 chars)': expected NAME, "
         "NAME@ALIAS or NAME/VERSION"),
        (None, "m\x1b[2J", "--model 'm\\x1b[2J': expected NAME, NAME@ALIAS or NAME/VERSION"),
        ("../../tmp/x", None, "--run-id '../../tmp/x': expected an MLflow run id (letters, "
         "digits, - and _)"),
    ],
)  # fmt: skip
def test_a_model_reference_no_store_could_hold_is_refused(run_id, model, message) -> None:
    assert refused(lambda: ModelRef.parse(run_id, model)) == message


def test_model_references_parse() -> None:
    assert ModelRef.parse(None, "m@champion") == ModelRef(name="m", alias_or_version="champion")
    assert ModelRef.parse(None, "m/12") == ModelRef(name="m", alias_or_version="12")
    assert ModelRef.parse(None, "m") == ModelRef(name="m")
    run = "0123456789abcdef0123456789abcdef"
    assert ModelRef.parse(run, None) == ModelRef(run_id=run)


def test_a_native_stack_trace_is_dropped_from_a_quoted_error() -> None:
    exc = ValueError(
        "[10:42:01] src/objective/regression_obj.cu:121: label must be in [0,1] for logistic "
        "regression\nStack trace:\n  [bt] (0) /lib/libxgboost.so(+0x2a3f1) [0x7f]\n  [bt] (1) ..."
    )
    assert one_line(exc) == (
        "[10:42:01] src/objective/regression_obj.cu:121: label must be in [0,1] for logistic "
        "regression"
    )
