"""The composition root's container: the long-lived adapters the app and its handlers share."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from infra.db.engine import Database
from infra.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    redis: Redis
