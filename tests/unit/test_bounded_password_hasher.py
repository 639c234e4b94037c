"""Password hashing runs at most the configured number at once per process; the rest wait."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from zenzefi_core.bootstrap import Core
from zenzefi_core.security import BoundedPasswordHasher, fast_password_hasher
from zenzefi_core.settings import SecuritySettings, Settings

CALLERS = 24


class GatedHasher:
    """Blocks every call until `release` is set, and records how many were inside at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._entered = threading.Condition(self._lock)

    def _run(self, result: str) -> str:
        with self._lock:
            self.inside += 1
            self.calls += 1
            self.most_inside = max(self.most_inside, self.inside)
            self._entered.notify_all()
        self.release.wait()
        with self._lock:
            self.inside -= 1
        return result

    def wait_until_inside(self, count: int) -> None:
        with self._entered:
            assert self._entered.wait_for(lambda: self.inside >= count, timeout=10)

    def hash(self, password: str) -> str:
        return self._run(f"hashed:{password}")

    def verify(self, password_hash: str, password: str) -> bool:
        return self._run(password_hash) == f"hashed:{password}"


@pytest.mark.parametrize("bound", [1, 3])
def test_no_more_than_the_bound_run_at_once_and_every_call_completes(bound: int) -> None:
    inner = GatedHasher()
    hasher = BoundedPasswordHasher(inner, max_concurrent=bound)

    def call(index: int) -> object:
        if index % 2:
            return hasher.verify(f"hashed:pw{index}", f"pw{index}")
        return hasher.hash(f"pw{index}")

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        futures = [pool.submit(call, i) for i in range(CALLERS)]
        try:
            inner.wait_until_inside(bound)
            # The bound is full and the other callers are queued at the semaphore, not inside.
            assert inner.inside == bound
            assert inner.calls == bound
        finally:
            # Even when an assertion fails, so the pool's threads end and the test cannot hang.
            inner.release.set()
        results = [f.result(timeout=10) for f in futures]

    assert inner.most_inside == bound
    assert inner.calls == CALLERS
    assert results == [True if i % 2 else f"hashed:pw{i}" for i in range(CALLERS)]


def test_a_failing_call_gives_its_slot_back() -> None:
    class Broken:
        def hash(self, password: str) -> str:
            raise RuntimeError("boom")

        def verify(self, password_hash: str, password: str) -> bool:
            raise RuntimeError("boom")

    hasher = BoundedPasswordHasher(Broken(), max_concurrent=1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            hasher.hash("pw")
        with pytest.raises(RuntimeError):
            hasher.verify("h", "pw")


def test_the_bound_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedPasswordHasher(fast_password_hasher(), max_concurrent=0)


def test_the_setting_is_validated_and_defaults_to_the_cpu_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZENZEFI_SECURITY_MAX_CONCURRENT_PASSWORD_HASHES", "0")
    too_few = r"max_concurrent_password_hashes\s+Input should be greater than or equal to 1"
    with pytest.raises(ValidationError, match=too_few):
        Settings()
    monkeypatch.setenv("ZENZEFI_SECURITY_MAX_CONCURRENT_PASSWORD_HASHES", "3")
    assert Settings().security.password_hash_limit() == 3
    monkeypatch.delenv("ZENZEFI_SECURITY_MAX_CONCURRENT_PASSWORD_HASHES")

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert SecuritySettings().password_hash_limit() == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert SecuritySettings().password_hash_limit() == 2


def test_the_core_bounds_the_hasher_it_is_given(tmp_path: Path) -> None:
    inner = GatedHasher()
    settings = Settings(
        data_dir=tmp_path, security=SecuritySettings(max_concurrent_password_hashes=2)
    )
    core = Core.from_settings(settings, hasher=inner)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(core.hasher.hash, f"pw{i}") for i in range(6)]
            try:
                inner.wait_until_inside(2)
                assert inner.calls == 2
            finally:
                inner.release.set()
            assert [f.result(timeout=10) for f in futures] == [f"hashed:pw{i}" for i in range(6)]
        assert inner.most_inside == 2
    finally:
        core.close()
