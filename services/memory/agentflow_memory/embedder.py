"""Text embedders: anything with a `dimension` and an async batch `embed` serves the memory book."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agentflow_runtime.embedding import hash_embedding

DEFAULT_DIMENSION = 256


class Embedder(Protocol):
    """Turns texts into vectors of one fixed dimension."""

    @property
    def dimension(self) -> int:
        """The length of every vector this embedder returns."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class LocalEmbedder:
    """Deterministic feature-hashing embeddings computed in process (no model, no network)."""

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [hash_embedding(text, self._dimension) for text in texts]
