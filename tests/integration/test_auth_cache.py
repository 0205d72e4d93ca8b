"""Resolved credentials are reused in-process, and forgotten the moment they change: at once in
the process that made the change, and through Redis pub/sub in every other process. Also the
batched per-principal limiter, which counts locally and syncs to Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.ratelimit import BatchedLimiter
from api.services import Services
from domain.shared.events import EventMetadata
from infra.db.engine import Database
from infra.identity import auth_cache
from infra.identity.accounts import Accounts
from infra.identity.auth_cache import AuthCache
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import bearer, register
from tests.integration.test_http_platform import assert_problem


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_live_for_the_ttl_or_less_and_the_cache_is_bounded() -> None:
    clock = Clock()
    cache = AuthCache(5.0, max_entries=3, clock=clock)
    ada, bob = uuid.uuid4(), uuid.uuid4()
    cache.put(b"a", ada, "A")
    cache.put(b"short", ada, "S", valid_for_s=1.0)
    cache.put(b"gone", ada, "G", valid_for_s=-1.0)  # already expired: not stored
    assert cache.get(b"gone") is None
    clock.now += 2
    assert cache.get(b"a") == "A"
    assert cache.get(b"short") is None
    clock.now += 3
    assert cache.get(b"a") is None
    for i in range(5):
        cache.put(f"k{i}", bob, i)
    assert len(cache) == 3
    assert cache.get("k0") is None
    assert cache.get("k4") == 4
    cache.put(b"x", ada, "X")
    cache.forget_users([bob])
    assert cache.get("k4") is None
    assert cache.get(b"x") == "X"
    assert AuthCache(0).enabled is False


def fresh_app(settings: Settings, db: Database, redis: Redis) -> tuple[httpx.AsyncClient, Services]:
    services = Services(settings=settings, db=db, redis=redis)
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    app = create_app(settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"), services


async def test_a_committed_revocation_evicts_at_once_and_is_announced(
    settings: Settings, db: Database, redis: Redis
) -> None:
    # A TTL far longer than the test: only the invalidation can explain the eviction.
    patient = msgspec.structs.replace(settings, auth_cache_ttl_s=300.0)
    a, _ = fresh_app(patient, db, redis)
    b, services_b = fresh_app(patient, db, redis)
    listener = redis.pubsub(ignore_subscribe_messages=True)
    await listener.subscribe(auth_cache.CHANNEL)
    async with a, b, auth_cache.relay(redis):
        body = (await register(a, "ada@example.com")).json()
        token = bearer(body["access_token"])
        assert (await b.get("/api/v1/me", headers=token)).status_code == 200  # cached by B
        assert len(services_b.credentials()) == 2
        assert (await a.post("/api/v1/auth/logout", headers=token)).status_code == 204
        assert len(services_b.credentials()) == 0  # every cache of this process, at commit
        assert_problem(await b.get("/api/v1/me", headers=token), 401, "unauthenticated")
        message = None
        for _ in range(100):  # other processes hear it on the channel
            message = await listener.get_message(timeout=0.05)
            if message is not None:
                break
        assert message is not None
        assert message["data"].decode() == body["user"]["id"]
    await listener.aclose()


async def test_a_message_from_another_process_evicts_the_user(settings: Settings, db: Database, redis: Redis) -> None:
    """The receiving side alone: a user's entries go when a message names them."""
    patient = msgspec.structs.replace(settings, auth_cache_ttl_s=300.0)
    client, services = fresh_app(patient, db, redis)
    async with client:
        body = (await register(client, "ada@example.com")).json()
        token = bearer(body["access_token"])
        assert (await client.get("/api/v1/me", headers=token)).status_code == 200
        cache = services.credentials()
        assert len(cache) == 2  # the credential and the /me profile
        async with auth_cache.relay(redis):
            await redis.publish(auth_cache.CHANNEL, auth_cache.encode([uuid.UUID(body["user"]["id"])]))
            for _ in range(100):
                if len(cache) == 0:
                    break
                await asyncio.sleep(0.02)
        assert len(cache) == 0


async def test_a_rolled_back_change_evicts_nothing(settings: Settings, db: Database, redis: Redis) -> None:
    client, services = fresh_app(settings, db, redis)
    async with client:
        body = (await register(client, "ada@example.com")).json()
        token = bearer(body["access_token"])
        assert (await client.get("/api/v1/me", headers=token)).status_code == 200
        me = (await client.get("/api/v1/me", headers=token)).json()
        session_id, user_id = uuid.UUID(me["session_id"]), uuid.UUID(body["user"]["id"])

        async def revoke_then_fail() -> None:
            async with db.write() as session:
                accounts = Accounts(session, services.passwords, services.token_signer())
                await accounts.revoke(session_id, user_id, "revoked", EventMetadata())
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            await revoke_then_fail()
        assert len(services.credentials()) == 2
        assert (await client.get("/api/v1/me", headers=token)).status_code == 200


async def test_the_batched_limiter_is_exact_near_the_limit_and_shares_the_window(redis: Redis) -> None:
    one, two = BatchedLimiter(redis, fraction=0.1), BatchedLimiter(redis, fraction=0.1)
    allowed = 0
    for i in range(60):
        decision = await (one if i % 2 else two).hit("t", "k", 50)
        allowed += decision.allowed
    assert allowed == 50  # near the limit every request syncs, so two processes never overshoot
    assert not (await one.hit("t", "k", 50)).allowed
    other = await one.hit("t", "someone-else", 50)
    assert other.allowed
    assert other.remaining == 49


async def test_far_from_the_limit_the_limiter_talks_to_redis_in_batches(redis: Redis) -> None:
    calls = 0
    real = redis.pipeline

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    limiter = BatchedLimiter(redis, fraction=0.02, max_delay_s=3600)
    redis.pipeline = counting  # type: ignore[method-assign]
    try:
        for _ in range(200):
            assert (await limiter.hit("t", "busy", 10_000)).allowed
    finally:
        redis.pipeline = real  # type: ignore[method-assign]
    assert calls <= 200 // 200 + 2  # batches of 200 (2% of 10,000): one or two syncs, not 200
    window_key = [k async for k in redis.scan_iter("liteskill:rl:t:*:busy")]
    assert len(window_key) == 1
