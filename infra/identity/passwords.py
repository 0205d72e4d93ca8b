"""Argon2id password hashing, off the event loop, with a cap on concurrent hashes.

Parameters default to the OWASP minimum for Argon2id (19 MiB, t=2, p=1). Hashing is CPU- and
memory-bound, so it runs on worker threads, at most ``max_concurrency`` at a time: a burst of
logins queues instead of exhausting memory or starving the event loop. ``verify`` of an account
that does not exist checks against a dummy hash, so an unknown email costs the same as a wrong
password.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain.shared.errors import Invalid

MIN_LENGTH = 12
MAX_LENGTH = 128


def check_policy(password: str) -> None:
    """12 to 128 characters (counted as Unicode code points)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise Invalid(
            f"Passwords have {MIN_LENGTH} to {MAX_LENGTH} characters.",
            code="password_policy",
        )


class PasswordHasher:
    def __init__(
        self, *, memory_kib: int = 19_456, time_cost: int = 2, parallelism: int = 1, max_concurrency: int = 2
    ) -> None:
        self._argon = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, hash_len=32, salt_len=16, type=Type.ID
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._dummy: str | None = None

    async def _run(self, fn: object, *args: str) -> object:
        async with self._slots:
            return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]

    async def hash(self, password: str) -> str:
        check_policy(password)
        result = await self._run(self._argon.hash, password)
        assert isinstance(result, str)
        return result

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; ``stored=None`` (no such account) spends the
        same work and returns False."""
        if len(password) > MAX_LENGTH:
            password = password[:MAX_LENGTH]  # bound the work; such a password never matched anyway
        if stored is None:
            if self._dummy is None:
                self._dummy = await self._run(self._argon.hash, "not a real password, never matches")  # type: ignore[assignment]
            assert self._dummy is not None
            await self._run(self._verify, self._dummy, password + "\x00")
            return False
        ok = await self._run(self._verify, stored, password)
        return ok is True

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._argon.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with weaker parameters than the current ones."""
        return bool(self._argon.check_needs_rehash(stored))
