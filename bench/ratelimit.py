"""What one rate-limit decision costs the proxy: in this process, and shared through Redis.

    python bench/ratelimit.py [--redis redis://127.0.0.1:6379/0] [--calls 5000] [--concurrency 1,64]

For each `--concurrency`, that many coroutines on one event loop ask the limiter for a decision
(`acquire`, as the proxy does for each request) until `--calls` decisions are made, each on a
key of its own so none is refused: the in-process `SlidingWindowLimiter`, then the Redis
`RedisWindowLimiter`, then a bare Redis `PING` on the same kind of client for comparison (the
cost of one round trip, which is all the limiter should add). Prints decisions per second, the
mean time a coroutine waited for one, and the CPU time this process spent per decision (what
the proxy's event loop pays). Keys live under a namespace of the run's own
and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import redis.asyncio

from support import redis_namespace
from zenzefi_api.ratelimit import RedisWindowLimiter, SlidingWindowLimiter


async def measure(
    decide: Callable[[int], Awaitable[object]], calls: int, concurrency: int
) -> tuple[float, float, float]:
    """Over `calls` decisions: decisions per second, the mean microseconds a caller waited for
    one, and the microseconds of this process's CPU each took (what the event loop pays)."""
    per_worker = max(1, calls // concurrency)

    async def worker(lane: int) -> None:
        for n in range(per_worker):
            await decide(lane * per_worker + n)

    await asyncio.gather(*(worker(lane) for lane in range(min(10, concurrency))))  # warm up
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(lane) for lane in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    total = per_worker * concurrency
    return total / elapsed, elapsed * concurrency / total * 1e6, cpu / total * 1e6


async def run(url: str, namespace: str, calls: int, concurrencies: list[int]) -> None:
    local = SlidingWindowLimiter()
    shared = RedisWindowLimiter.from_url(url, namespace)
    ping_client = redis.asyncio.Redis.from_url(url)
    contenders: dict[str, Callable[[int], Awaitable[object]]] = {
        "in process": lambda n: local.acquire(f"proxy:{n}", limit=1000, window=60),
        "redis": lambda n: shared.acquire(f"proxy:{n}", limit=1000, window=60),
        "redis PING": lambda _n: ping_client.ping(),
    }
    print(
        f"{'limiter':<12} {'concurrency':>11} {'decisions/s':>12} {'mean wait us':>13} "
        f"{'CPU us each':>12}"
    )
    try:
        for concurrency in concurrencies:
            for name, decide in contenders.items():
                rate, wait, cpu = await measure(decide, calls, concurrency)
                print(f"{name:<12} {concurrency:>11} {rate:>12.0f} {wait:>13.1f} {cpu:>12.1f}")
    finally:
        await shared.aclose()
        await ping_client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,64")
    args = parser.parse_args()
    namespace = f"bench-ratelimit-{secrets.token_hex(4)}"
    with redis_namespace(args.redis, namespace):
        asyncio.run(
            run(args.redis, namespace, args.calls, [int(c) for c in args.concurrency.split(",")])
        )


if __name__ == "__main__":
    main()
