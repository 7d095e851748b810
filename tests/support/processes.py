"""Real ``celery -A workers …`` processes for tests: started with the session's environment
plus the test's, logging to a file, stopped gently and then for good."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import ROOT


def start_celery(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m celery -A workers <args>`` from the repository root; ``env`` is added to
    this process's environment, stdout and stderr go to ``log_path``."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", *args],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL if it has not exited within 30 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
