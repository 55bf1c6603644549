from __future__ import annotations

from agentflow_model_gateway.providers.base import ChatMessage, CompletionRequest
from agentflow_model_gateway.providers.local import LocalProvider, compose
from agentflow_runtime.embedding import cosine, hash_embedding
from agentflow_runtime.tokens import count_tokens

MESSAGES = [
    ChatMessage("system", "You write short, factual notes."),
    ChatMessage("user", "Write a short note about durable execution: what it is and why it matters."),
]


async def test_same_conversation_same_answer() -> None:
    first = await LocalProvider().complete(CompletionRequest("local", MESSAGES))
    second = await LocalProvider().complete(CompletionRequest("local", list(MESSAGES)))
    assert first == second
    assert first.text.startswith("Draft about durable execution:")
    assert first.finish_reason == "stop"
    assert first.usage.input_tokens == count_tokens(m.content for m in MESSAGES)
    assert first.usage.output_tokens == count_tokens([first.text])


def test_answers_depend_on_the_last_user_message() -> None:
    other = [*MESSAGES[:1], ChatMessage("user", "Tell me about tide pools")]
    assert compose(other) != compose(MESSAGES)
    assert "tide pools" in compose(other)
    assert compose([ChatMessage("user", "   ")]) == "Nothing to draft: the conversation has no words."


async def test_stream_is_the_completion_word_by_word() -> None:
    provider = LocalProvider()
    completion = await provider.complete(CompletionRequest("local", MESSAGES))
    deltas = [d async for d in provider.stream(CompletionRequest("local", MESSAGES))]
    assert "".join(d.text for d in deltas) == completion.text
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    assert len(deltas) > 5
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == completion.usage


async def test_max_tokens_truncates_with_length() -> None:
    completion = await LocalProvider().complete(CompletionRequest("local", MESSAGES, max_tokens=4))
    assert completion.finish_reason == "length"
    assert 0 < completion.usage.output_tokens <= 4


async def test_embeddings_are_deterministic_and_similar_for_similar_texts() -> None:
    embeddings = await LocalProvider(dim=64).embed(
        "local", ["cats are great pets", "Cats make great pets", "tax law"]
    )
    near, also_near, far = embeddings.vectors
    assert len(near) == 64
    assert near == hash_embedding("cats are great pets", 64)
    assert cosine(near, also_near) > cosine(near, far)
    assert abs(sum(x * x for x in near) - 1.0) < 1e-9
    assert embeddings.usage.input_tokens == 10


def test_hash_embedding_of_nothing_is_zero() -> None:
    assert hash_embedding("", 8) == [0.0] * 8
