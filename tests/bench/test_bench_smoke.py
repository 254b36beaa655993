"""The benchmark's small mode (N=50), as part of the suite: every scenario runs end to end.

No timing is asserted here (figures belong in bench/README.md); what is asserted are facts of
behaviour the benchmark measures: every connection reaches Connected, steady state costs no
reads beyond the watches, a test costs about one write, and nothing is written when nothing is due.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(out.read_text()))


def test_every_scenario_ran(results: dict[str, object]) -> None:
    for name in ("time_to_status", "burst", "steady", "memory", "isolation", "restart"):
        assert name in results, name


def test_steady_state_costs_one_write_and_no_reads_per_test(results: dict[str, object]) -> None:
    steady = results["steady"]
    assert isinstance(steady, dict)
    assert steady["tests"] > 0
    assert steady["api_reads_per_test"] == 0
    # one status PATCH per test; events only on transitions (none in steady state)
    assert steady["api_writes_per_test"] == pytest.approx(1.0, abs=0.05)
    assert steady["idle_api_writes"] == 0


def test_burst_tested_every_connection_once(results: dict[str, object]) -> None:
    burst = results["burst"]
    assert isinstance(burst, dict)
    (one,) = burst.values()
    assert one["tests"] == 50


def test_restart_reverified_every_connection(results: dict[str, object]) -> None:
    restart = results["restart"]
    assert isinstance(restart, dict)
    assert restart["connections"] == 50
    assert restart["backend_samples"] > 0


def test_memory_was_measured(results: dict[str, object]) -> None:
    memory = results["memory"]
    assert isinstance(memory, dict)
    assert all(isinstance(v, float) and v > 0 for v in memory["rss_mb"].values())
