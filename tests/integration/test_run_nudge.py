"""Nudges reach a run's work in whichever process runs it, over the runner's one pub/sub
subscription (approval decisions use them to wake the waiting turn)."""

from __future__ import annotations

import asyncio
import uuid

from api.services import Services
from infra.db.engine import Database
from infra.runs.runner import RunContext, RunRunner, Work, notify_nudge
from tests.integration import test_runs as runs_tests
from tests.integration.test_access import User
from tests.integration.test_runs import new_run, other_process

app = runs_tests.app
ada = runs_tests.ada
runners = runs_tests.runners


async def test_a_nudge_published_anywhere_wakes_the_waiting_work_and_no_other(
    services: Services, ada: User, runners: list[RunRunner], db: Database
) -> None:
    woke: dict[uuid.UUID, bool] = {}
    waiting: dict[uuid.UUID, asyncio.Event] = {}

    def waiter(run_id: uuid.UUID) -> Work:
        waiting[run_id] = asyncio.Event()

        async def work(ctx: RunContext) -> None:
            waiting[run_id].set()
            await ctx.wait_nudge(60)  # far longer than the test waits for the nudged one
            woke[run_id] = True

        return work

    process = other_process(services, runners)
    nudged, untouched = await new_run(db, ada), await new_run(db, ada)
    done = process.start(nudged, waiter(nudged))
    other = process.start(untouched, waiter(untouched))
    await asyncio.wait_for(asyncio.gather(waiting[nudged].wait(), waiting[untouched].wait()), 30)
    await asyncio.wait_for(process.subscribed.wait(), 30)
    await notify_nudge(services.redis, nudged)  # from "another process": only Redis in between
    await asyncio.wait_for(asyncio.shield(done), 30)
    assert done.result() == "completed"
    assert woke == {nudged: True}
    assert not other.done()
    assert process.nudge_local(untouched)  # this process runs it: nudged directly
    assert await asyncio.wait_for(other, 30) == "completed"
    assert not process.nudge_local(nudged)  # finished: nothing to wake
