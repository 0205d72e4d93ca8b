"""The background runtime of a process: Dramatiq worker threads, the outbox relay, the projection
runner and periodic maintenance, started and stopped as one unit.

``serve`` runs one in-process (unless ``LITESKILL_WORKER_EMBEDDED=false``); ``liteskill worker``
runs one on its own. Several may run at once: relays share rows with ``SKIP LOCKED``, projectors
serialise on their checkpoint row, and maintenance jobs are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import dramatiq
from redis.asyncio import Redis

from infra.db.engine import Database, create_engine
from infra.eventstore.postgres import NUDGE_CHANNEL, PostgresTransactionFactory
from infra.nudges import wake_on
from infra.projections import all_projections
from infra.projections.runner import ProjectionRunner
from infra.settings import Settings
from infra.worker.broker import DramatiqSender, WorkerContext, build_broker, declare_actors
from infra.worker.outbox import OUTBOX_CHANNEL, relay_all

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class BackgroundRuntime:
    def __init__(self, settings: Settings, *, consume: bool = True) -> None:
        self.settings = settings
        self.consume = consume
        self.broker = build_broker(settings)
        self.context = WorkerContext(settings)
        self.actors = declare_actors(self.broker, self.context)
        self.worker: dramatiq.Worker | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.consume:
            self.worker = dramatiq.Worker(self.broker, worker_threads=self.settings.worker.threads)
            self.worker.start()
        self._thread = threading.Thread(target=self._run_loop, name="liteskill-background", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        log.info("background runtime started", extra={"consume": self.consume})

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
            self.worker = None
        self.broker.close()
        log.info("background runtime stopped")

    # -- the loop thread ---------------------------------------------------------------------
    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        assert self.settings.database.url
        assert self.settings.redis.url
        db = Database(create_engine(self.settings.database.url, pool_size=4))
        redis: Redis = Redis.from_url(self.settings.redis.url)
        factory = PostgresTransactionFactory(db, redis)
        runner = ProjectionRunner(
            factory,
            all_projections(),
            redis=redis,
            channel=NUDGE_CHANNEL,
            batch=self.settings.eventstore.projection_batch,
        )
        self._ready.set()
        tasks = [
            asyncio.create_task(runner.run(self._stop)),
            asyncio.create_task(self._relay(db, redis)),
            asyncio.create_task(self._maintenance(factory)),
            asyncio.create_task(self._reap_runs(db, redis)),
        ]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await redis.aclose()
            await db.dispose()

    async def _relay(self, db: Database, redis: Redis) -> None:
        sender = DramatiqSender(self.broker)
        wake = asyncio.Event()
        poll_s = self.settings.worker.outbox_poll_ms / 1000

        listener = asyncio.create_task(wake_on(redis, OUTBOX_CHANNEL, wake, retry_s=poll_s))
        try:
            while True:
                wake.clear()
                try:
                    await relay_all(db, sender)
                except Exception:
                    log.exception("outbox relay failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=poll_s)
        finally:
            listener.cancel()

    async def _reap_runs(self, db: Database, redis: Redis) -> None:
        """At start and every lease period: runs whose lease expired end as interrupted."""
        import infra.chat.turn  # noqa: F401  (registers the reaper's on_interrupted("chat") hook)
        from infra.runs.reaper import reap
        from infra.runs.stream import RunStreams

        streams = RunStreams(redis, self.settings.run_retention_s)
        while True:
            try:
                await reap(db, streams)
            except Exception:
                log.exception("run reaper failed; retrying")
            await asyncio.sleep(self.settings.run_lease_s)

    async def _maintenance(self, factory: PostgresTransactionFactory) -> None:
        while True:
            try:
                async with factory.transaction() as tx:
                    await tx.outbox.enqueue("platform.prune")
            except Exception:
                log.exception("could not schedule maintenance")
            await asyncio.sleep(PRUNE_EVERY_S)
