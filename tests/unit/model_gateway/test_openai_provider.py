from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentflow_model_gateway.providers.base import ChatMessage, CompletionRequest, Delta, Usage
from agentflow_model_gateway.providers.openai import OpenAIProvider
from agentflow_runtime.errors import (
    AgentFlowError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

from .fake_openai import API_KEY, free_port, serve

KEY_ENV = "AF_TEST_OPENAI_KEY"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)


def request(model: str = "gpt-test", max_tokens: int | None = None) -> CompletionRequest:
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "hello there world")]
    return CompletionRequest(model, messages, max_tokens=max_tokens, temperature=0.2)


async def test_complete(base_url: str) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    completion = await provider.complete(request())
    await provider.aclose()
    assert completion.text == "echo: hello there world"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(11, 4)
    assert completion.model == "gpt-test-2024"


async def test_complete_reports_length(base_url: str) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    assert (await provider.complete(request(max_tokens=1))).finish_reason == "length"
    await provider.aclose()


async def test_stream_parses_sse_and_usage(base_url: str) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    deltas: list[Delta] = [delta async for delta in provider.stream(request())]
    await provider.aclose()
    assert "".join(d.text for d in deltas) == "echo: hello there world"
    assert [d.text for d in deltas[:-1]] == ["echo:", " hello", " there", " world"]
    assert deltas[-1] == Delta("", finish_reason="stop", usage=Usage(11, 4))


async def test_embeddings_in_input_order(base_url: str) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    embeddings = await provider.embed("embed-test", ["a", "bbb"])
    await provider.aclose()
    assert embeddings.vectors == [[1.0, 0.0], [3.0, 1.0]]
    assert embeddings.usage == Usage(input_tokens=4)


@pytest.mark.parametrize(
    ("model", "error", "reason"),
    [
        ("rate-limited", ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("broken", Unavailable, "PROVIDER_UNAVAILABLE"),
        ("bad", InvalidArgument, "PROVIDER_REJECTED_REQUEST"),
    ],
)
async def test_http_errors_are_mapped(
    base_url: str, model: str, error: type[AgentFlowError], reason: str
) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    with pytest.raises(error) as info:
        await provider.complete(request(model))
    assert info.value.reason == reason
    assert f"{model} on purpose" in info.value.message
    with pytest.raises(error):
        [d async for d in provider.stream(request(model))]
    with pytest.raises(error):
        await provider.embed(model, ["x"])
    await provider.aclose()


async def test_wrong_key_is_failed_precondition(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong")
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV)
    with pytest.raises(FailedPrecondition):
        await provider.complete(request())
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(FailedPrecondition, match=KEY_ENV):
        await provider.complete(request())
    await provider.aclose()


async def test_timeout_is_deadline_exceeded(base_url: str) -> None:
    provider = OpenAIProvider(base_url, api_key_env=KEY_ENV, timeout_seconds=0.2)
    with pytest.raises(DeadlineExceeded):
        await provider.complete(request("slow"))
    await provider.aclose()


async def test_unreachable_is_unavailable() -> None:
    provider = OpenAIProvider(f"http://127.0.0.1:{free_port()}/v1", api_key_env=KEY_ENV)
    with pytest.raises(Unavailable):
        await provider.complete(request())
    with pytest.raises(Unavailable):
        [d async for d in provider.stream(request())]
    await provider.aclose()
