"""What a refused `ml` command prints. pytest puts this folder on sys.path:
`from cli_errors import one_line_error`."""

from __future__ import annotations

from typing import Any


def one_line_error(result: Any) -> str:
    """A click result that failed with exactly one `Error: ...` line, its last line (progress
    lines may come before it) and no traceback; returns that line."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    return errors[0]
