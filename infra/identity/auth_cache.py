"""A short-lived, in-process cache of resolved credentials, invalidated on every change that can
end or narrow them.

Resolving a bearer token costs a database round trip (is the session or key still live, is the
user still enabled, what is their role); on the hottest routes that is most of the request. The
cache keeps what a credential resolved to for ``LITESKILL_AUTH_CACHE_TTL_S`` seconds (and never
past an access token's own expiry), keyed by a digest of the presented token, so a hit also
skips the signature check.

Freshness does not rest on the TTL. Every event that ends or narrows a credential (a session
revoked, a key revoked, a password changed, a user disabled or their role or permissions changed)
is recorded through ``infra.identity.accounts.record``, which notes the user on the write session;
when that session commits, this process forgets the user's entries at once (``after_commit``) and
tells every other process through Redis pub/sub (``CHANNEL``), whose subscriber forgets them
too. The TTL only bounds how long a lost pub/sub message can leave another process stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from domain.identity.admin_events import UserUpdated
from domain.identity.api_key_events import ApiKeyRevoked
from domain.identity.events import PasswordChanged, SessionRevoked
from domain.shared.events import Event

log = logging.getLogger(__name__)

CHANNEL = "liteskill:auth-changed"
"""Redis pub/sub channel: a message is a comma-separated list of user ids whose credentials changed."""

# Events after which a user's cached credentials (and profile) must not be used any more.
CREDENTIAL_EVENTS: tuple[type[Event], ...] = (SessionRevoked, ApiKeyRevoked, PasswordChanged, UserUpdated)

_INFO_KEY = "liteskill.auth_changed"


def token_key(token: str) -> bytes:
    """The cache key of a presented token (a digest: the cache never holds credentials)."""
    return hashlib.blake2b(token.encode(), digest_size=20).digest()


@dataclass(slots=True)
class _Entry:
    user_id: uuid.UUID
    value: Any
    expires: float


class AuthCache:
    """Bounded LRU of ``key -> value`` per user, each entry valid until its own deadline."""

    def __init__(self, ttl_s: float, max_entries: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes | str, _Entry] = OrderedDict()
        self._by_user: dict[uuid.UUID, set[bytes | str]] = {}
        _hub.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: bytes | str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: bytes | str, user_id: uuid.UUID, value: Any, *, valid_for_s: float | None = None) -> None:
        if not self.enabled:
            return
        life = self.ttl_s if valid_for_s is None else min(self.ttl_s, valid_for_s)
        if life <= 0:
            return
        self._drop(key)
        self._entries[key] = _Entry(user_id, value, self.clock() + life)
        self._by_user.setdefault(user_id, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget_users(self, user_ids: Iterable[uuid.UUID]) -> None:
        for user_id in user_ids:
            for key in self._by_user.pop(user_id, ()):
                self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._by_user.clear()

    def _drop(self, key: bytes | str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._by_user.get(entry.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[entry.user_id]

    def __len__(self) -> int:
        return len(self._entries)


class _Hub:
    """This process's caches and the publishers told about committed credential changes."""

    def __init__(self) -> None:
        self.caches: weakref.WeakSet[AuthCache] = weakref.WeakSet()
        self.publishers: list[Callable[[set[uuid.UUID]], None]] = []

    def add(self, cache: AuthCache) -> None:
        self.caches.add(cache)

    def changed(self, user_ids: set[uuid.UUID], *, publish: bool = True) -> None:
        for cache in list(self.caches):
            cache.forget_users(user_ids)
        if publish:
            for publisher in list(self.publishers):
                try:
                    publisher(user_ids)
                except Exception:  # pragma: no cover - a broken publisher must not fail a commit
                    log.warning("auth change publisher failed", exc_info=True)


_hub = _Hub()


def note_change(session: Any, payload: Event) -> None:
    """Called for every recorded audit event: remember credential changes on the write session
    (an ``AsyncSession``; other units of work do not change credentials)."""
    if not isinstance(payload, CREDENTIAL_EVENTS):
        return
    info = getattr(session, "info", None)
    if info is None:
        return
    info.setdefault(_INFO_KEY, set()).add(payload.user_id)  # type: ignore[attr-defined]


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    changed = session.info.pop(_INFO_KEY, None)
    if changed:
        _hub.changed(set(changed))


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_INFO_KEY, None)


def add_publisher(publisher: Callable[[set[uuid.UUID]], None]) -> Callable[[], None]:
    """Tell ``publisher`` about every committed change in this process; returns its removal."""
    _hub.publishers.append(publisher)
    return lambda: _hub.publishers.remove(publisher)


def encode(user_ids: Iterable[uuid.UUID]) -> bytes:
    return ",".join(str(u) for u in user_ids).encode()


def received(message: bytes | str) -> None:
    """A change announced by another process: forget its users here (without re-publishing)."""
    text = message.decode() if isinstance(message, bytes) else message
    ids: set[uuid.UUID] = set()
    for part in text.split(","):
        try:
            ids.add(uuid.UUID(part))
        except ValueError:
            continue
    if ids:
        _hub.changed(ids, publish=False)


@asynccontextmanager
async def relay(redis: Redis) -> AsyncIterator[None]:
    """While open: publish this process's committed credential changes to ``CHANNEL`` and apply
    the other processes' (one per process, started by the app's lifespan)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    def publish(user_ids: set[uuid.UUID]) -> None:
        task = loop.create_task(_publish(redis, user_ids))
        pending.add(task)
        task.add_done_callback(pending.discard)

    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)

    async def listen() -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=5.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("auth change subscription failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if message is not None and message.get("type") == "message":
                received(message["data"])

    remove = add_publisher(publish)
    listener = loop.create_task(listen())
    try:
        yield
    finally:
        remove()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await pubsub.unsubscribe(CHANNEL)
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _publish(redis: Redis, user_ids: set[uuid.UUID]) -> None:
    try:
        await redis.publish(CHANNEL, encode(user_ids))
    except Exception:
        log.warning("could not announce a credential change; other processes rely on the TTL", exc_info=True)
