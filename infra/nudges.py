"""Redis pub/sub nudges: a best-effort "look now" for pollers (projections, the outbox relay).

Nothing depends on a nudge arriving: every listener also polls, so a lost message or a dropped
subscription only delays work until the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def wake_on(redis: Any, channel: str, wake: asyncio.Event, *, retry_s: float = 1.0) -> None:
    """Set ``wake`` on every message published on ``channel``, resubscribing after failures,
    until cancelled."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("nudge subscription lost", extra={"channel": channel}, exc_info=True)
            await asyncio.sleep(retry_s)
