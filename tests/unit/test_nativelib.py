"""Package C sources are compiled once per machine into a private cache, or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ml import nativelib

SOURCE = "int answer(void) { return 42; }\n"


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("ML_NATIVE", raising=False)
    nativelib._load.cache_clear()
    path = tmp_path / "answer.c"
    path.write_text(SOURCE)
    yield path
    nativelib._load.cache_clear()


def test_built_once_then_loaded_from_the_cache(source: Path) -> None:
    lib = nativelib.load(source)
    assert lib is not None and lib.answer() == 42
    built = list(nativelib.cache_dir().iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    assert oct(nativelib.cache_dir().stat().st_mode & 0o777) == "0o700"
    mtime = built[0].stat().st_mtime_ns
    # another process loads the same file instead of compiling again
    env = {**os.environ, "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"], "CC": "false"}
    code = (
        "import sys; from pathlib import Path; from ml import nativelib; "
        f"lib = nativelib.load(Path({str(source)!r})); sys.exit(0 if lib.answer() == 42 else 1)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert [p.stat().st_mtime_ns for p in nativelib.cache_dir().iterdir()] == [mtime]


def test_a_changed_source_is_built_anew(source: Path) -> None:
    assert nativelib.load(source) is not None
    source.write_text(SOURCE.replace("42", "43"))
    nativelib._load.cache_clear()
    lib = nativelib.load(source)
    assert lib is not None and lib.answer() == 43
    assert len(list(nativelib.cache_dir().iterdir())) == 2


def test_turned_off(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_NATIVE", "0")
    assert nativelib.load(source) is None
    assert nativelib.failure(source) == "turned off by ML_NATIVE"
    assert not nativelib.cache_dir().exists()


def test_a_failed_build_leaves_nothing(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source.write_text("this is not C\n")
    assert nativelib.load(source) is None
    assert "answer.c did not compile" in (nativelib.failure(source) or "")
    assert list(nativelib.cache_dir().iterdir()) == []


def test_no_compiler(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(source.parent))
    assert nativelib.load(source) is None
    assert nativelib.failure(source) == "no C compiler (cc, gcc or clang) on PATH"


def test_a_cache_others_can_write_is_never_used(source: Path) -> None:
    """The library goes to the private fallback in the temporary folder instead."""
    folder = nativelib.cache_dir()
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    lib = nativelib.load(source)
    assert lib is not None and lib.answer() == 42
    assert list(folder.iterdir()) == []
    assert len(list(nativelib.fallback_dir().iterdir())) == 1
    assert oct(nativelib.fallback_dir().stat().st_mode & 0o777) == "0o700"


def test_no_private_folder_at_all(source: Path) -> None:
    for folder in (nativelib.cache_dir(), nativelib.fallback_dir()):
        folder.mkdir(parents=True)
        folder.chmod(0o777)
    assert nativelib.load(source) is None
    assert nativelib.failure(source) == (
        f"{nativelib.cache_dir()} is not private to this user; "
        f"{nativelib.fallback_dir()} is not private to this user"
    )


def test_a_damaged_library_is_built_again(source: Path) -> None:
    assert nativelib.load(source) is not None
    (built,) = nativelib.cache_dir().iterdir()
    built.unlink()  # a new file: this process still maps the old one
    built.write_bytes(b"\x7fELF truncated")
    nativelib._load.cache_clear()
    lib = nativelib.load(source)
    assert lib is not None and lib.answer() == 42


def test_a_relative_cache_setting_is_ignored(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert nativelib.load(source) is not None
    assert nativelib.cache_dir() == tmp_path / "home" / ".cache" / "ml" / "native"
    assert not (tmp_path / "relative").exists()
