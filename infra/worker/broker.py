"""The Dramatiq side: a Redis broker with the AsyncIO middleware, one actor per registered job,
and the sender the outbox relay uses.

Each actor opens its own write transaction through ``WorkerContext``, records the message id in
``processed_messages`` (a redelivery finds it and does nothing), then runs the job's handler in the
same transaction. A failing handler rolls everything back and Dramatiq retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage
from sqlalchemy import text

from infra.db.engine import Database, create_engine
from infra.eventstore.postgres import PostgresTransactionFactory
from infra.settings import Settings
from infra.worker.jobs import Job, registered_jobs
from infra.worker.outbox import OutboxMessage, Sender

log = logging.getLogger(__name__)

_MARK_PROCESSED = text(
    "INSERT INTO processed_messages (message_id, actor) VALUES (:message_id, :actor) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)


class WorkerContext:
    """Adapters for actors, created lazily on the event loop the actors run on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def database(self) -> Database:
        loop = asyncio.get_running_loop()
        if self._db is None or self._loop is not loop:
            assert self.settings.database.url, "resolve the database URL first"
            self._db = Database(create_engine(self.settings.database.url, pool_size=self.settings.worker.threads))
            self._loop = loop
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.dispose()
            self._db = None


def build_broker(settings: Settings) -> RedisBroker:
    assert settings.redis.url, "resolve the Redis URL first"
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.redis.url, namespace=f"{settings.worker.queue_prefix}:dramatiq"
    )
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    return broker


def _actor_fn(job: Job, context: WorkerContext) -> Any:
    async def run(**kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        message_id = uuid.UUID(message.message_id)
        factory = PostgresTransactionFactory(context.database())
        async with factory.transaction() as tx:
            fresh = (await tx.session.execute(_MARK_PROCESSED, {"message_id": message_id, "actor": job.name})).first()
            if fresh is None:
                log.info("duplicate delivery skipped", extra={"message_id": str(message_id), "job": job.name})
                return
            await job.handler(tx, **kwargs)

    run.__name__ = job.name.replace(".", "_")
    return run


def declare_actors(broker: RedisBroker, context: WorkerContext) -> dict[str, dramatiq.Actor[Any, Any]]:
    """One Dramatiq actor per registered job, bound to ``broker``."""
    return {
        job.name: dramatiq.Actor(
            _actor_fn(job, context),
            broker=broker,
            actor_name=job.name,
            queue_name=job.queue,
            priority=0,
            options={"max_retries": job.max_retries, "min_backoff": 500, "max_backoff": 300_000},
        )
        for job in registered_jobs().values()
    }


class DramatiqSender(Sender):
    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def send(self, message: OutboxMessage) -> None:
        self.broker.enqueue(
            dramatiq.Message(
                queue_name=message.queue,
                actor_name=message.actor,
                args=(),
                kwargs=message.kwargs,
                options={},
                message_id=str(message.message_id),
            )
        )
