"""The secret key: a configured one must be long enough, a generated one is born whole, private
and the same for every process that starts at once."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from zenzefi_core.settings import (
    MIN_SECRET_KEY_BYTES,
    SecretKeyError,
    Settings,
    generated_secret_key,
)

ZENZEFI = Path(sys.executable).parent / "zenzefi"
#: Processes racing to generate the key in each round.
RACERS = 6


def _race(path: str, start: Any, keys: Any) -> None:
    start.wait(30)
    keys.put(generated_secret_key(Path(path)))


def _watch(path: str, start: Any, stop: Any, seen: Any) -> None:
    """Read the key file as fast as possible while the racers run; report every distinct
    content found, so an empty or partial key ever visible would show up."""
    start.wait(30)
    contents: set[str] = set()
    while not stop.is_set():
        try:
            contents.add(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
    seen.put(sorted(contents))


@pytest.mark.parametrize("round_", range(3))
def test_processes_starting_at_once_agree_on_one_whole_private_key(
    tmp_path: Path, round_: int
) -> None:
    context = multiprocessing.get_context("spawn")
    data = tmp_path / f"data-{round_}"
    path = data / "secret_key"
    start, stop = context.Event(), context.Event()
    keys, seen = context.Queue(), context.Queue()
    watcher = context.Process(target=_watch, args=(str(path), start, stop, seen))
    racers = [context.Process(target=_race, args=(str(path), start, keys)) for _ in range(RACERS)]
    for process in [watcher, *racers]:
        process.start()
    start.set()
    try:
        results = [keys.get(timeout=60) for _ in racers]
    finally:
        stop.set()
        for process in [*racers, watcher]:
            process.join(60)
    contents = seen.get(timeout=10)

    assert all(process.exitcode == 0 for process in racers)
    assert len(set(results)) == 1
    [key] = set(results)
    assert len(key.encode()) >= MIN_SECRET_KEY_BYTES
    assert path.read_text(encoding="utf-8") == key
    # Whatever the watcher managed to read was always the whole key, never empty or partial.
    assert set(contents) <= {key}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temporary file is left behind.
    assert [p.name for p in data.iterdir()] == ["secret_key"]


def test_the_generated_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o000)
    try:
        key = Settings(data_dir=tmp_path / "data").resolved_secret_key()
    finally:
        os.umask(previous)
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == key
    # Kept: the next start reads the same key.
    assert Settings(data_dir=tmp_path / "data").resolved_secret_key() == key


@pytest.mark.parametrize("content", ["", "\n", "short-key", "x" * (MIN_SECRET_KEY_BYTES - 1)])
def test_an_empty_or_short_key_file_is_refused_not_used(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret_key"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SecretKeyError, match="no usable secret key"):
        generated_secret_key(path)
    # Left for the operator to restore: overwriting it could lose a key still in use.
    assert path.read_text(encoding="utf-8") == content


@pytest.mark.parametrize(
    "key", ["", "x", "x" * (MIN_SECRET_KEY_BYTES - 1), "é" * (MIN_SECRET_KEY_BYTES // 2 - 1)]
)
def test_a_configured_key_shorter_than_32_bytes_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(secret_key=SecretStr(key))


@pytest.mark.parametrize("key", ["x" * MIN_SECRET_KEY_BYTES, "é" * (MIN_SECRET_KEY_BYTES // 2)])
def test_a_configured_key_of_32_bytes_is_used_as_it_is(key: str, tmp_path: Path) -> None:
    settings = Settings(secret_key=SecretStr(key), data_dir=tmp_path / "data")
    assert settings.resolved_secret_key() == key
    assert not (tmp_path / "data").exists()


def test_the_command_refuses_to_start_with_a_short_key_and_does_not_print_it(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    env["ZENZEFI_DATA_DIR"] = str(tmp_path / "data")
    env["ZENZEFI_SECRET_KEY"] = "hunter2-is-not-a-key"
    done = subprocess.run(  # noqa: S603 - a fixed executable and arguments
        [str(ZENZEFI), "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "ZENZEFI_SECRET_KEY must be at least 32 bytes" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    # Refused before anything was created.
    assert not (tmp_path / "data").exists()


def test_the_command_refuses_a_damaged_key_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").write_text("", encoding="utf-8")
    env["ZENZEFI_DATA_DIR"] = str(data)
    done = subprocess.run(  # noqa: S603 - a fixed executable and arguments
        [str(ZENZEFI), "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no usable secret key" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_system_without_hard_links_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(SecretKeyError, match="set ZENZEFI_SECRET_KEY"):
        generated_secret_key(tmp_path / "secret_key")
    assert list(tmp_path.iterdir()) == []
