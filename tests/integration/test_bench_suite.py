"""The pure parts of `bench/suite.py`: reading wrk's summary, the ratio table and py-spy's
stacks. Nothing here is timed: the targets are the bench's business, not the suite's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    # The bench's scripts import their neighbours (`support`, `purchase`) by name.
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_suite", BENCH / "suite.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.34ms   89.00%
  12000 requests in 5.00s, 12.34MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   2400.00
WRK-SUMMARY {"requests": 12000, "duration_us": 5000000, "bytes": 12939428, "connect": 0, \
"read": 1, "write": 0, "status": 12, "timeout": 2, "p50_us": 1100, "p99_us": 3450, \
"max_us": 12340}
"""


def test_the_wrk_summary_is_read_and_failed_requests_do_not_count(suite: ModuleType) -> None:
    result = suite.parse_wrk(WRK_OUTPUT)
    assert result.requests == 12000
    assert result.errors == 15
    assert result.seconds == 5.0
    assert result.rate == (12000 - 15) / 5
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.1, 3.45, 12.34)


def test_output_without_a_summary_is_an_error_not_a_zero(suite: ModuleType) -> None:
    with pytest.raises(ValueError, match="WRK-SUMMARY"):
        suite.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_wrk_script_rotates_bearer_tokens_and_reports(suite: ModuleType) -> None:
    script = suite.wrk_script(
        "POST", "/api/v1/tokens/purchase", {"Content-Type": "application/json"},
        '{"duration_hours": 1}', rotate=["Bearer a", "Bearer b"],
    )  # fmt: skip
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = "{\\"duration_hours\\": 1}"' in script
    assert 'local rotate = {"Bearer a", "Bearer b"}' in script
    assert "done = function(summary, latency, requests)" in script
    plain = suite.wrk_script("GET", "/bare/1k", {})
    assert "request = function" not in plain


def test_the_ratio_table_says_which_targets_are_met(suite: ModuleType) -> None:
    targets = [
        suite.Target("proxy / bare", "proxy", "bare", 0.25),
        suite.Target("balance / bare", "balance", "bare", 0.15),
        suite.Target("not measured", "status", "bare", 0.30),
        suite.Target("no reference", "proxy", "nginx", 0.15),
    ]
    rows = suite.ratio_rows({"proxy": 3000.0, "balance": 1000.0, "bare": 10000.0}, targets)
    assert rows[2] == "| proxy / bare | 3,000 / 10,000 | 30.0% | 25% | yes |"
    assert rows[3] == "| balance / bare | 1,000 / 10,000 | 10.0% | 15% | **no** |"
    assert len(rows) == 4


def test_profile_samples_are_shared_out_by_package(suite: ModuleType) -> None:
    collapsed = "\n".join(
        [
            "run (uvicorn/server.py:1);send (httpcore/_async/http11.py:90);recv (ssl.py:1) 6",
            "run (uvicorn/server.py:1);get (zenzefi_core/services/users.py:9);"
            "execute (sqlalchemy/engine/base.py:1400) 3",
            "run (uvicorn/server.py:1);emit (logging/__init__.py:1100) 1",
            "a garbled line",
        ]
    )
    assert suite.profile_shares(collapsed) == {"ssl": 0.6, "sqlalchemy": 0.3, "logging": 0.1}
    # The server is on every stack and says nothing; the rest by time under it.
    assert suite.profile_layers(collapsed) == {
        "httpcore": 0.6,
        "ssl": 0.6,
        "zenzefi_core": 0.3,
        "sqlalchemy": 0.3,
        "logging": 0.1,
    }
    assert suite.frame_package("f (/repo/src/zenzefi_api/proxy.py:10)") == "zenzefi_api"
    assert suite.frame_package("_run_code (<frozen runpy>:88)") == "frozen runpy"
    assert suite.profile_shares("") == {}
