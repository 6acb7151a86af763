from __future__ import annotations

import io

from ml import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_redraws_in_place_on_a_terminal() -> None:
    stream = _Tty()
    update = progress.progress_bar(stream)
    update(50, 100)
    update(100, 100)
    out = stream.getvalue()
    assert out.count("\r") == 2 and "100/100 rows" in out and out.endswith("\n")


def test_lines_elsewhere_first_then_throttled_then_last(monkeypatch) -> None:
    clock = iter([0.0, 0.0, 1.0, 2.0, 11.0, 12.0, 13.0])  # start, then one per call
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    update = progress.progress_bar(stream, every_seconds=10.0)
    for done in (10, 20, 30, 40, 50, 60):
        update(done, 60)
    # the first batch at once (a signal that writing started), one after 10 s, and the last
    assert stream.getvalue() == (
        "\n    10/60 rows written\n    40/60 rows written\n    60/60 rows written"
    )
