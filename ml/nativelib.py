"""C sources shipped inside the package, compiled once per machine with the system's C compiler
and loaded through ctypes.

A shared library is built the first time a process asks for it and kept in the user's cache
(`$XDG_CACHE_HOME/ml/native`, else `~/.cache/ml/native`; where that cannot be written, a
private `ml-native-<uid>` folder in the temporary folder), named by a hash of the source, the
compiler's flags and the machine's architecture; later processes load it in a millisecond (a
damaged file is built again). What it speeds up always has a pure-Python or XGBoost path
beside it, so anything that goes wrong here (no compiler, a cache that cannot be written or is
not private, a failed build, `ML_NATIVE=0`) only means that path is taken: `load` returns None
and `failure` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from functools import cache
from pathlib import Path

FLAGS = ("-O2", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 120
_failures: dict[str, str] = {}


def load(source: Path) -> ctypes.CDLL | None:
    """The compiled library of `source` (built now if this machine has none yet), or None."""
    return _load(source.resolve())


def failure(source: Path) -> str | None:
    """Why `load(source)` returned None in this process (None when it did not)."""
    return _failures.get(str(source.resolve()))


def enabled() -> bool:
    return os.environ.get("ML_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(root):  # unset, empty or relative: the spec's default
        root = str(Path.home() / ".cache")
    return Path(root) / "ml" / "native"


def fallback_dir() -> Path:
    """Where libraries go when the user's cache cannot be written (a read-only home)."""
    return Path(tempfile.gettempdir()) / f"ml-native-{os.getuid()}"


@cache
def _load(source: Path) -> ctypes.CDLL | None:
    try:
        if not enabled():
            raise _NotBuilt("turned off by ML_NATIVE")
        code = source.read_bytes()
        parts = [code, *(f.encode() for f in FLAGS), platform.machine().encode()]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]
        folder = _usable_dir()
        target = folder / f"{source.stem}-{key}.so"
        if target.exists():
            try:
                return ctypes.CDLL(str(target))
            except OSError:
                pass  # a damaged file: built again below
        _build(_compiler(), source, folder, target)
        return ctypes.CDLL(str(target))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the other path is taken
        _failures[str(source)] = str(exc) or type(exc).__name__
        return None


class _NotBuilt(Exception):
    pass


def _compiler() -> list[str]:
    named = os.environ.get("CC", "").strip()
    if named:
        return shlex.split(named)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    raise _NotBuilt("no C compiler (cc, gcc or clang) on PATH")


def _usable_dir() -> Path:
    """The user's cache folder, else the fallback in the temporary folder: the first that can
    be made private and written."""
    reasons = []
    for folder in (cache_dir(), fallback_dir()):
        try:
            return _private_dir(folder)
        except (OSError, _NotBuilt) as exc:
            reasons.append(str(exc))
    raise _NotBuilt("; ".join(reasons))


def _private_dir(folder: Path) -> Path:
    """The cache folder, created private; refused unless this user owns it, nobody else can
    write it (a library loaded from it runs as this process) and this user can."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _NotBuilt(f"{folder} is not private to this user")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _NotBuilt(f"{folder} cannot be written")
    return folder


def _build(compiler: list[str], source: Path, folder: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run(  # noqa: S603 - the compiler on a package file, no shell
            [*compiler, *FLAGS, "-o", tmp, str(source), "-lm"],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise _NotBuilt(f"{source.name} did not compile: {last}")
        os.replace(tmp, target)  # atomic: a concurrent build of the same source is identical
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
