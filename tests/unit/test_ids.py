"""Ids are UUIDv7 and strictly increasing, so they sort in creation order."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

from zenzefi_core.ids import new_id


def test_new_id_is_uuid_version_7_with_rfc_variant() -> None:
    value = new_id()
    assert isinstance(value, uuid.UUID)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_new_id_carries_the_current_unix_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    embedded = value.int >> 80
    # Milliseconds, not seconds or microseconds. The upper bound is loose because the 12-bit
    # counter borrows from the next millisecond when more than 4096 ids are made in one.
    assert before <= embedded <= after + 60_000


def test_new_ids_are_strictly_increasing_across_many_calls() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    # Their text form sorts the same way, which is what a database ordering by id relies on.
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    assert all(i.version == 7 for i in ids)


def test_new_ids_made_by_many_threads_are_unique() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(8)]
    barrier = threading.Barrier(len(made))

    def make(bucket: list[uuid.UUID]) -> None:
        barrier.wait()
        bucket.extend(new_id() for _ in range(2_000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for bucket in made for i in bucket]
    assert len(set(everything)) == len(everything) == 16_000
    for bucket in made:
        assert bucket == sorted(bucket)
