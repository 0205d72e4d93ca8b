"""Fixed-window arithmetic of the rate limiter, on a real Valkey."""

from __future__ import annotations

from typing import Any

from api.ratelimit import hit


async def test_windows_count_and_reset(redis: Any) -> None:
    t0 = 1_000_040.0  # 20 s into a window (1_000_020 is a multiple of 60)
    decisions = [await hit(redis, "b", "k", 2, now=t0) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [d.remaining for d in decisions] == [1, 0, 0]
    assert decisions[0].reset_s == 40
    assert (await hit(redis, "b", "k", 2, now=t0 + 40)).allowed  # the next window starts fresh
    assert (await hit(redis, "b", "other", 2, now=t0)).allowed  # keys are independent
    assert 0 < await redis.ttl(f"liteskill:rl:b:{int(t0) // 60}:k") <= 65
