"""Rate limits in Redis: fixed one-minute windows per key, answered with 429 problem+json,
``Retry-After`` and the IETF ``RateLimit``/``RateLimit-Policy`` headers.

A window is one Redis key (``INCR`` + ``EXPIRE`` in one round trip). Fixed windows allow a burst
of up to twice the limit across a boundary, which is acceptable for brute-force protection and
costs one key per client per minute. If Redis is unreachable the request is let through (and
logged): losing rate limiting is better than losing login.

A limit that lets a request through may ``remember`` its decision in the request's ASGI scope; the
request middleware then adds the ``RateLimit`` headers to whatever response follows. (The scope
rather than ``request.state``: that only persists when the server provides a ``state`` dict.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from api.errors import ApiError

log = logging.getLogger(__name__)

WINDOW_S = 60
_SCOPE_KEY = "liteskill.rate_limit"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self, policy: str) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{policy}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{policy}";r={self.remaining};t={self.reset_s}',
        }


async def hit(redis: Redis, bucket: str, key: str, limit: int, *, now: float | None = None) -> Decision:
    """Count one request against ``bucket``/``key`` in the current window."""
    current = int(now if now is not None else time.time())
    window = current // WINDOW_S
    reset = (window + 1) * WINDOW_S - current
    name = f"liteskill:rl:{bucket}:{window}:{key}"
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_S + 5)
            count, _ = await pipe.execute()
    except Exception:
        log.warning("rate limiter unavailable; allowing", extra={"bucket": bucket}, exc_info=True)
        return Decision(allowed=True, limit=limit, remaining=limit, reset_s=reset)
    return Decision(allowed=int(count) <= limit, limit=limit, remaining=max(limit - int(count), 0), reset_s=reset)


@dataclass(slots=True)
class _Counter:
    window: int
    synced: int = 0
    """The window's count across every process, as Redis last reported it (ours included)."""
    pending: int = 0
    """This process's requests not yet added to Redis."""
    synced_at: float = 0.0


class BatchedLimiter:
    """The per-principal API limit without a Redis round trip per request.

    Each process counts locally and adds its count to the shared Redis window in batches: when the
    unsynced count reaches ``fraction`` of the limit, after ``max_delay_s``, or on every request
    once the estimate is within ``fraction`` of the limit, so decisions near the limit are exact.
    Across ``n`` processes the limit can be overshot by at most ``n`` batches. Brute-force limits
    (``hit``/``enforce``) stay exact: one round trip each. A Redis failure lets requests through.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        fraction: float = 0.02,
        max_delay_s: float = 1.0,
        clock: Any = time.monotonic,
        wall: Any = time.time,
    ) -> None:
        self.redis = redis
        self.fraction = fraction
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.wall = wall
        self._counters: dict[str, _Counter] = {}
        self._window = -1

    async def hit(self, bucket: str, key: str, limit: int) -> Decision:
        current = int(self.wall())
        window = current // WINDOW_S
        reset = (window + 1) * WINDOW_S - current
        if window != self._window:  # a new window: yesterday's counters are done
            self._counters.clear()
            self._window = window
        name = f"liteskill:rl:{bucket}:{window}:{key}"
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = _Counter(window)
        counter.pending += 1
        batch = max(1, int(limit * self.fraction))
        estimate = counter.synced + counter.pending
        if counter.pending >= batch or estimate + batch > limit or self.clock() - counter.synced_at >= self.max_delay_s:
            estimate = await self._sync(name, counter, estimate)
        return Decision(allowed=estimate <= limit, limit=limit, remaining=max(limit - estimate, 0), reset_s=reset)

    async def _sync(self, name: str, counter: _Counter, estimate: int) -> int:
        pending, counter.pending = counter.pending, 0
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(name, pending)
                pipe.expire(name, WINDOW_S + 5)
                total, _ = await pipe.execute()
        except Exception:
            counter.pending += pending  # try again with the next request
            log.warning("rate limiter unavailable; allowing", exc_info=True)
            return estimate
        counter.synced = int(total)
        counter.synced_at = self.clock()
        return counter.synced + counter.pending


async def enforce(redis: Redis, bucket: str, key: str, limit: int) -> None:
    """Raise 429 ``rate_limited`` when ``key`` is over ``limit`` requests this minute."""
    decision = await hit(redis, bucket, key, limit)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests; try again later.",
            headers={"Retry-After": str(decision.reset_s), **decision.headers(bucket)},
        )


def remember(scope: Any, decision: Decision, policy: str) -> None:
    """Keep a passing decision for the response's headers (see ``response_headers``)."""
    scope[_SCOPE_KEY] = (decision, policy)


def response_headers(scope: Any, present: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The raw ``RateLimit`` headers of a remembered decision; none when nothing was limited or the
    response already carries its own (a stricter limit answered)."""
    remembered = scope.get(_SCOPE_KEY)
    if remembered is None or any(name.lower() == b"ratelimit" for name, _ in present):
        return []
    decision, policy = remembered
    return [(name.lower().encode(), value.encode()) for name, value in decision.headers(policy).items()]
