"""One contract for every chat adapter: each shared scenario, spoken in the provider's own wire
protocol by its loopback fake and read through the provider's official SDK, must come out as the
identical provider-neutral event sequence (tests/fakes/chat_scenarios.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.ports import ChatModel
from domain.llm.stream import StreamEvent
from infra.llm.anthropic_chat import anthropic_chat_model
from infra.llm.bedrock_chat import bedrock_chat_model
from infra.llm.openai_chat import openai_chat_model
from infra.llm.streaming import StreamPolicy
from tests.fakes.anthropic_server import running_anthropic_server
from tests.fakes.bedrock_server import running_bedrock_server
from tests.fakes.chat_scenarios import SCENARIOS, comparable, expected
from tests.fakes.openai_server import running_openai_server

# No retries, so failures surface as they are. Only the stall scenario relies on the idle limit;
# every other scenario gets a patient one so a busy machine cannot turn it into a timeout. The idle
# limit also covers the wait for the first event, so even the stall limit leaves a loaded 2-core
# machine seconds to produce it (0.5 s once lost the first delta of the Bedrock stall in CI).
STALL = StreamPolicy(max_retries=0, idle_timeout_s=3)
PATIENT = StreamPolicy(max_retries=0, idle_timeout_s=30)

Factory = Callable[[StreamPolicy], ChatModel]


@pytest.fixture(scope="module")
def adapters() -> Iterator[dict[str, Factory]]:
    with ExitStack() as stack:
        openai = stack.enter_context(running_openai_server())
        anthropic = stack.enter_context(running_anthropic_server())
        bedrock = stack.enter_context(running_bedrock_server())
        yield {
            "openai": lambda p: openai_chat_model(api_key="sk-test", base_url=openai.base_url, policy=p),
            "anthropic": lambda p: anthropic_chat_model(api_key="sk-ant-test", base_url=anthropic.base_url, policy=p),
            "bedrock": lambda p: bedrock_chat_model(
                region="eu-west-1",
                endpoint_url=bedrock.base_url,
                access_key_id="AKIDFAKE",
                secret_access_key="fake-secret",
                policy=p,
            ),
        }


async def run(model: ChatModel, scenario: str) -> list[StreamEvent]:
    request = ChatRequest(model=f"scenario:{scenario}", messages=[UserMessage.text("hi")])
    events = [event async for event in model.stream(request)]
    close: Any = getattr(model, "aclose", None)
    if close is not None:
        await close()
    return events


@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_every_adapter_turns_every_scenario_into_the_same_events(
    adapters: dict[str, Factory], provider: str, scenario: str
) -> None:
    model = adapters[provider](STALL if scenario == "stall" else PATIENT)
    assert comparable(await run(model, scenario)) == comparable(expected(scenario))
