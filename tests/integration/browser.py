"""Debian's chromium, headless, for tests that must see a page the way people do.

`make browser` installs it (`make test` runs that first). A test that needs it fails with that
hint when it is missing rather than skipping: a skipped browser test reads like a passing one.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

# No network, no first-run UI, no background services: the page is a local file.
_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
]
TIMEOUT_SECONDS = 60


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed, and this test needs a real browser: run `make browser` "
            "(installs Debian's chromium with apt-get; `make test` does it for you)",
            pytrace=False,
        )
    return path


def _run(page: Path, profile: Path, *flags: str) -> str:
    command = [chromium(), *_FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if done.returncode != 0:
        pytest.fail(f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def dump_dom(page: Path, profile: Path, *, virtual_time_ms: int = 5000) -> str:
    """The DOM after the page has loaded and its scripts ran, serialized as HTML."""
    return _run(page, profile, f"--virtual-time-budget={virtual_time_ms}", "--dump-dom")


def screenshot(page: Path, out: Path, profile: Path, *, width: int, height: int) -> Path:
    _run(page, profile, f"--window-size={width},{height}", f"--screenshot={out}")
    if not out.is_file():
        pytest.fail(f"chromium wrote no screenshot to {out}")
    return out


@dataclass
class Page:
    """What a test wants from a serialized DOM: the title, the text, the images, the scripts."""

    title: str = ""
    text: str = ""
    images: list[dict[str, str]] = field(default_factory=list)
    scripts: int = 0
    by_id: dict[str, str] = field(default_factory=dict)  # element id -> its text


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._chunks: list[str] = []
        self._open: list[tuple[str, str | None, int]] = []  # tag, id, where its text starts
        self._in = ""  # "title", "script" or "style" while inside one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "img":
            self.page.images.append(attributes)
            return
        if tag == "script":
            self.page.scripts += 1
        if tag in {"title", "script", "style"}:
            self._in = tag
        self._open.append((tag, attributes.get("id"), len(self._chunks)))

    def handle_endtag(self, tag: str) -> None:
        self._in = ""
        while self._open:
            name, element_id, start = self._open.pop()
            if element_id:
                self.page.by_id[element_id] = " ".join(" ".join(self._chunks[start:]).split())
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.page.title += data
        elif not self._in:
            self._chunks.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = " ".join(" ".join(self._chunks).split())


def parse(dom: str) -> Page:
    parser = _PageParser()
    parser.feed(dom)
    parser.close()
    return parser.page
