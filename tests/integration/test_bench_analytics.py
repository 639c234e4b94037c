"""`bench/analytics.py` keeps working: a small run on PostgreSQL, where every figure the API
answers must equal the one its raw SQL statement computes and the one summed row by row from
the same data (the script exits 1 on any difference). Nothing here is timed: the targets are
the bench's business, not the suite's."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

BENCH = Path(__file__).parents[2] / "bench" / "analytics.py"


@pytest.mark.postgres
def test_a_small_bench_run_finds_every_way_in_agreement(postgres_url: str) -> None:
    server = make_url(postgres_url).set(database="postgres").render_as_string(hide_password=False)
    database = f"zenzefi_bench_smoke_{secrets.token_hex(4)}"
    arguments = [
        "--postgres", server, "--database", database,
        # 300 users, so that some were referred (users after the 200th) and earn bonuses.
        "--users", "300", "--sessions", "2000",
        "--warmup", "0", "--repeat", "1", "--baseline-warmup", "0", "--baseline-repeat", "1",
        "--no-targets",
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603 - our own script, with our own arguments
        [sys.executable, str(BENCH), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "all three ways agree on every number of every response" in done.stdout, output
    assert "API/raw" in done.stdout, output
    assert "2,000 sessions (100 of the heavy user)" in done.stdout, output
