from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from agentflow_model_gateway.config import ModelConfig
from agentflow_model_gateway.gateway import CallInfo, ModelGateway
from agentflow_model_gateway.providers.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    Delta,
    Embeddings,
)
from agentflow_model_gateway.providers.local import LocalProvider
from agentflow_model_gateway.routing import Router
from agentflow_model_gateway.store import usage
from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from sqlalchemy import select

PRICED = ModelConfig("priced", "local", "local", input_price_per_mtok=2.0, output_price_per_mtok=10.0)
MESSAGES = [ChatMessage("user", "Write about ledgers")]


class CountingProvider(LocalProvider):
    """The local provider, counting calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        return await super().complete(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        async for delta in super().stream(request):
            yield delta

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        self.calls += 1
        return await super().embed(model, texts)


@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
async def gateway(db: Database, provider: CountingProvider) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(Router([PRICED], factory=lambda _model: provider), db)
    yield gateway
    await gateway.aclose()


async def ledger(db: Database) -> list[tuple[str, str, str | None, int, int, float]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                usage.c.tenant,
                usage.c.operation,
                usage.c.idempotency_key,
                usage.c.input_tokens,
                usage.c.output_tokens,
                usage.c.cost_usd,
            ).order_by(usage.c.id)
        )
        return [tuple(row) for row in rows.all()]


async def test_repeated_key_replays_without_calling_the_provider(
    gateway: ModelGateway, provider: CountingProvider, db: Database
) -> None:
    call = CallInfo("acme", run="runs/r1", step_id="draft", idempotency_key="runs/r1/draft")
    first = await gateway.complete("models/priced", MESSAGES, call)
    again = await gateway.complete("models/priced", MESSAGES, call)
    assert provider.calls == 1
    assert not first.replayed and again.replayed
    assert (again.text, again.usage, again.cost_usd, again.model) == (
        first.text,
        first.usage,
        first.cost_usd,
        "models/priced",
    )
    expected_cost = (first.usage.input_tokens * 2.0 + first.usage.output_tokens * 10.0) / 1e6
    assert first.cost_usd == pytest.approx(expected_cost)
    # Keys are per tenant: another tenant's identical key is a new call.
    other = await gateway.complete("priced", MESSAGES, CallInfo("globex", idempotency_key="runs/r1/draft"))
    assert not other.replayed and provider.calls == 2
    rows = await ledger(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("acme", "complete", "runs/r1/draft"),
        ("globex", "complete", "runs/r1/draft"),
    ]


class GatedProvider(CountingProvider):
    """Blocks in `complete` until the gate opens, so calls overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def complete(self, request: CompletionRequest) -> Completion:
        self.entered.set()
        await self.gate.wait()
        return await super().complete(request)


async def test_a_key_in_flight_is_waited_for_not_called_twice(db: Database) -> None:
    provider = GatedProvider()
    gateway = ModelGateway(Router([PRICED], factory=lambda _model: provider), db)
    call = CallInfo("acme", run="runs/r2", step_id="a", idempotency_key="r2/a/1")
    first = asyncio.create_task(gateway.complete("priced", MESSAGES, call))
    await asyncio.wait_for(provider.entered.wait(), 10)
    # The first caller goes away (a worker killed mid-step); the call itself carries on.
    first.cancel()
    second = asyncio.create_task(gateway.complete("priced", MESSAGES, call))
    with pytest.raises(FailedPrecondition):
        await gateway.complete("priced", [ChatMessage("user", "other")], call)
    await asyncio.sleep(0.05)
    assert not second.done()
    provider.gate.set()
    answer = await asyncio.wait_for(second, 10)
    assert answer.replayed and answer.text
    assert provider.calls == 1
    again = await gateway.complete("priced", MESSAGES, call)
    assert again.replayed and again.text == answer.text
    assert [r[2] for r in await ledger(db)] == ["r2/a/1"]


async def test_key_reused_for_a_different_request_is_refused(
    gateway: ModelGateway, provider: CountingProvider
) -> None:
    call = CallInfo("acme", idempotency_key="runs/r9/draft")
    await gateway.complete("priced", MESSAGES, call)
    different = [ChatMessage("user", "an entirely different question")]
    with pytest.raises(FailedPrecondition) as caught:
        await gateway.complete("priced", different, call)
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert provider.calls == 1


async def test_unkeyed_calls_are_each_recorded(
    gateway: ModelGateway, provider: CountingProvider, db: Database
) -> None:
    await gateway.complete("priced", MESSAGES, CallInfo("acme"))
    await gateway.complete("priced", MESSAGES, CallInfo("acme"))
    assert provider.calls == 2
    assert [r[2] for r in await ledger(db)] == [None, None]


async def test_stream_records_usage_at_the_end(gateway: ModelGateway, db: Database) -> None:
    events = [e async for e in gateway.stream("priced", MESSAGES, CallInfo("acme", run="runs/r2"))]
    assert events[-1].finish_reason == "stop"
    assert events[-1].usage is not None
    assert events[-1].cost_usd > 0
    assert all(e.delta for e in events[:-1])
    assert (await ledger(db))[0][1] == "stream"


async def test_embed_records_input_tokens(gateway: ModelGateway, db: Database) -> None:
    embeddings = await gateway.embed("priced", ["one two", "three"], CallInfo("acme"))
    assert len(embeddings.vectors) == 2
    assert (await ledger(db))[0][1:5] == ("embed", None, 3, 0)


async def test_bad_requests(gateway: ModelGateway) -> None:
    with pytest.raises(NotFound):
        await gateway.complete("models/unknown", MESSAGES, CallInfo("acme"))
    with pytest.raises(InvalidArgument):
        await gateway.complete("priced", [], CallInfo("acme"))
    with pytest.raises(InvalidArgument):
        await gateway.complete("priced", [ChatMessage("robot", "x")], CallInfo("acme"))
    with pytest.raises(InvalidArgument):
        await gateway.embed("priced", [], CallInfo("acme"))
