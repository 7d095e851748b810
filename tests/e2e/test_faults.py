"""The multi-host fault-injection run, CI size: nothing lost, nothing doubled, nothing leaked.

Runs ``bench/faults.py --quick`` for real (network namespaces, the machine's redis-server, two
prefork worker hosts, beat, the TCP listener, libfaketime): at least 10 faults of every kind in
under 3 minutes, then reads its result file — and ``bench/faults.py --sentinel --quick``: Redis
as a primary, two replicas and three Sentinels, with primary kills (failovers), split brains,
replica and Sentinel kills besides the other kinds, also under 3 minutes. Needs root, ``ip`` and
libfaketime (CI installs them with ``.ci/install-faults-deps``); skipped, saying why, where they
are missing. The runs bring their own Redis, so the suite's second pass (against the machine's
Redis) skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.faults import KINDS, QUICK_SENTINEL
from bench.faults_hosts import FAKETIME_LIBS
from bench.faults_sentinel import KINDS as SENTINEL_KINDS
from tests.support.helpers import ROOT

QUICK_FAULTS = 10
TOPOLOGY_KINDS = ("redis_restart", "primary_kill", "split_brain", "replica_kill")


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip netns`): run .ci/install-faults-deps"
    if not any(Path(p).exists() for p in FAKETIME_LIBS):
        return "needs libfaketime (Debian `faketime`): run .ci/install-faults-deps"
    if os.environ.get("WATCHKEEPER_TEST_REDIS_URL"):
        return "brings its own Redis: run once, in the embedded-Redis pass"
    return None


def run_faults(tmp_path_factory: pytest.TempPathFactory, *flags: str) -> dict[str, Any]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("faults") / "faults.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHKEEPER_", "MOONSHOT_")) and k != "REDIS_URL"
    }
    proc = subprocess.run(
        [sys.executable, "bench/faults.py", "--quick", *flags, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.exists(), f"no result file; output:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    result["_output"] = proc.stdout[-4000:]
    return result


@pytest.fixture(scope="module", params=["plain", "sentinel"])
def fault_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One quick run on a single Redis, one on Redis with Sentinel (``--sentinel``)."""
    flags = ("--sentinel",) if request.param == "sentinel" else ()
    result = run_faults(tmp_path_factory, *flags)
    result["_mode"] = request.param
    return result


def expected_faults(mode: str) -> dict[str, int]:
    kinds = dict.fromkeys(KINDS, QUICK_FAULTS)
    if mode == "sentinel":
        kinds.update(dict.fromkeys(SENTINEL_KINDS, QUICK_FAULTS))
        kinds.update(dict.fromkeys(TOPOLOGY_KINDS, QUICK_SENTINEL))
    return kinds


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_kind_of_fault_is_injected_as_planned(fault_run: dict[str, Any]) -> None:
    """Ten of every kind; with Sentinel, the topology's kinds (each a failover or a resync, one
    at a time) twice each to stay within the CI's 3 minutes — the default run makes 50."""
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    for kind, count in expected_faults(fault_run["_mode"]).items():
        assert fault_run["faults"][kind] >= count, (kind, fault_run["faults"])


@pytest.mark.slow
def test_every_offered_item_is_written_exactly_once(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    assert not any(fault_run["collector"]["entries_missed"].values())
    for kind, r in fault_run["items"].items():
        assert r["offered"] > 0, kind
        assert (r["lost"], r["doubled"], r["unexpected"]) == (0, 0, 0), (kind, r)


@pytest.mark.slow
def test_every_located_alert_has_exactly_one_location(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    loc = fault_run["locations"]
    assert loc["alerts"] > 0
    assert (loc["lost"], loc["doubled"], loc["orphans"]) == (0, 0, 0), loc


@pytest.mark.slow
def test_every_alert_is_notified_under_exactly_one_key(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    note = fault_run["notifications"]
    assert note["alerts"] > 0
    assert (note["lost"], note["doubled"], note["orphans"]) == (0, 0, 0), note


@pytest.mark.slow
def test_sentinel_clients_resume_after_a_primary_kill(fault_run: dict[str, Any]) -> None:
    if fault_run["_mode"] != "sentinel":
        pytest.skip("the plain run has no Sentinel")
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    resume = fault_run["sentinel"]["resume_after_primary_kill"]
    assert resume["probe_write_s"]["n"] == resume["primary_kills"] >= QUICK_SENTINEL
    assert resume["watchkeeper_write_s"]["n"] == resume["primary_kills"]
    assert fault_run["sentinel"]["failovers"] >= resume["primary_kills"]


@pytest.mark.slow
def test_redis_memory_stays_within_the_caps(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    mem = fault_run["memory"]
    assert 0 < mem["redis_used_memory_peak"] < mem["budget"]["total"]


@pytest.mark.slow
def test_no_process_is_left(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    procs = fault_run["processes"]
    assert procs["left"] == [] and procs["in_namespaces_after_stop"] == {}, procs


@pytest.mark.slow
def test_no_secret_in_any_log_file_key_or_status(fault_run: dict[str, Any]) -> None:
    assert fault_run.get("checks_ran"), fault_run.get("errors")
    assert fault_run["secrets"]["leaks"] == []
    assert fault_run["sources"]["unauthorised_requests"] == 0  # the token really was used
