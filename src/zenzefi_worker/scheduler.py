"""The scheduler: runs the periodic jobs, with exactly one scheduler active across the cluster.

Start `zenzefi scheduler` on as many machines as you like. Each one tries to take a Redis lock
(`SET key token NX PX ttl`); the one that holds it is active and renews it every third of its
lifetime from a thread of its own, so a long job never lets it lapse. The others wait and try
again every tick: when the active one stops it releases the lock, and when it dies the lock runs
out after `lock_ttl_seconds`, and another takes over.

A job runs when the active scheduler finds it due: a second key per job
(`SET ran:<job> NX PX interval`) says it ran within its interval, anywhere. That key outlives a
change of scheduler, so a takeover does not run every job again at once: each job runs once per
interval however the schedulers come and go. The jobs are idempotent all the same.

On the embedded default there is one process and no Redis: the same loop runs in a thread of
`zenzefi serve` with an in-process lock and clock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import redis

from zenzefi_worker.app import Job

logger = logging.getLogger("zenzefi.scheduler")

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Coordination(Protocol):
    """What the schedulers of one deployment share: the leader lock and when each job ran."""

    def acquire(self) -> bool:
        """Become the active scheduler if no other is; True when this one is now active."""
        ...

    def renew(self) -> bool:
        """Extend this scheduler's lock; False when it was lost (it ran out, or was taken)."""
        ...

    def release(self) -> None: ...

    def claim_run(self, job: str, interval_seconds: float) -> bool:
        """True when `job` has not run within its interval: the caller runs it now."""
        ...


class RedisCoordination:
    def __init__(self, client: redis.Redis, namespace: str, *, lock_ttl_seconds: float) -> None:
        self._client = client
        self._lock_key = f"{namespace}:scheduler:leader"
        self._ran_prefix = f"{namespace}:scheduler:ran:"
        self._ttl_ms = max(int(lock_ttl_seconds * 1000), 1)
        # Unique per scheduler: only the holder can renew or release the lock.
        self._token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self._client.set(self._lock_key, self._token, nx=True, px=self._ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self._lock_key], args=[self._token, self._ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self._lock_key], args=[self._token])

    def claim_run(self, job: str, interval_seconds: float) -> bool:
        interval_ms = max(int(interval_seconds * 1000), 1)
        key = self._ran_prefix + job
        return bool(self._client.set(key, self._token, nx=True, px=interval_ms))


class LocalCoordination:
    """One process, one scheduler: always active, with the job times kept in memory."""

    def __init__(self) -> None:
        self._next_run: dict[str, float] = {}

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def claim_run(self, job: str, interval_seconds: float) -> bool:
        now = time.monotonic()
        if now < self._next_run.get(job, 0.0):
            return False
        self._next_run[job] = now + interval_seconds
        return True


class Scheduler:
    """Runs `jobs` while this scheduler holds the lock, until `stop()`."""

    def __init__(
        self,
        jobs: Sequence[Job],
        coordination: Coordination,
        *,
        lock_ttl_seconds: float,
        tick_seconds: float = 1.0,
    ) -> None:
        self._jobs = list(jobs)
        self._coordination = coordination
        self._renew_every = lock_ttl_seconds / 3
        self._tick = tick_seconds
        self._stopping = threading.Event()
        self._active = threading.Event()
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None

    @property
    def is_active(self) -> bool:
        return self._active.is_set()

    def start(self) -> None:
        """Run in a background thread (the embedded default, tests)."""
        self._thread = threading.Thread(target=self.run, name="zenzefi-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """The loop: take the lock when it is free, run what is due, until told to stop."""
        try:
            while not self._stopping.is_set():
                if not self._active.is_set():
                    self._try_to_lead()
                if self._active.is_set():
                    self._run_due_jobs()
                self._stopping.wait(self._tick)
        finally:
            self._resign()

    def _try_to_lead(self) -> None:
        try:
            leading = self._coordination.acquire()
        except redis.RedisError as error:
            logger.warning("scheduler lock unreachable: %s", error)
            return
        if leading:
            logger.info("this scheduler is now the active one")
            self._active.set()
            self._keeper = threading.Thread(
                target=self._keep_lock, name="zenzefi-scheduler-lock", daemon=True
            )
            self._keeper.start()

    def _keep_lock(self) -> None:
        while self._active.is_set() and not self._stopping.wait(self._renew_every):
            try:
                kept = self._coordination.renew()
            except redis.RedisError as error:
                logger.warning("could not renew the scheduler lock: %s", error)
                kept = False
            if not kept:
                logger.warning("this scheduler lost its lock and stands by")
                self._active.clear()

    def _run_due_jobs(self) -> None:
        for job in self._jobs:
            if self._stopping.is_set() or not self._active.is_set():
                return
            try:
                due = self._coordination.claim_run(job.name, job.interval_seconds)
            except redis.RedisError as error:
                logger.warning("could not check whether %s is due: %s", job.name, error)
                return
            if not due:
                continue
            try:
                logger.log(job.log_level, "%s", job.run())
            except Exception:
                # The next interval tries again; one failing job must not stop the others.
                logger.exception("job %s failed", job.name)

    def _resign(self) -> None:
        was_active = self._active.is_set()
        self._active.clear()
        if self._keeper is not None:
            self._keeper.join()
        if was_active:
            try:
                self._coordination.release()
            except redis.RedisError as error:
                logger.warning("could not release the scheduler lock (it will run out): %s", error)
