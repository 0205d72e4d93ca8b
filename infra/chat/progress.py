"""What a chat turn has produced so far (``Progress``: its text across model rounds, its tokens, its
checkpoints written beside the stream) and ``uncancellable``, for the writes that end a turn."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from domain.llm.stream import Usage as TokenCount

CHECKPOINT_EVERY_S = 3.0
"""Longest time between two checkpoints of the partial text into the conversation (tests patch it)."""

T = TypeVar("T")


async def uncancellable(make: Callable[[], Awaitable[T]]) -> T:
    """Finish ``make()`` even if the calling task is cancelled again meanwhile (a cancel arrives by
    pub/sub and directly, so the work's task may be cancelled twice)."""
    task = asyncio.ensure_future(make())
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()


@dataclass(slots=True)
class Progress:
    """What the turn produced so far, across its model rounds."""

    text: list[str] = field(default_factory=list)
    tokens: TokenCount = field(default_factory=TokenCount)
    checkpoint_due: float = field(
        default_factory=lambda: time.monotonic() + CHECKPOINT_EVERY_S * random.uniform(0.5, 1)
    )
    checkpointing: asyncio.Task[None] | None = None

    @property
    def content(self) -> str:
        return "".join(self.text)

    def checkpoint(self, write: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """Write the text so far in the background if a checkpoint is due and none is in flight."""
        now = time.monotonic()
        if now >= self.checkpoint_due and (self.checkpointing is None or self.checkpointing.done()):
            self.checkpoint_due = now + CHECKPOINT_EVERY_S
            self.checkpointing = asyncio.get_running_loop().create_task(write(self.content))

    async def settle(self, *, cancel: bool = False) -> None:
        """Wait for the checkpoint in flight (or stop it): nothing is checkpointed after the end."""
        task, self.checkpointing = self.checkpointing, None
        if task is not None:
            if cancel:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
