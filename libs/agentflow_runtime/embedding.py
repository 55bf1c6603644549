"""Deterministic text embeddings by feature hashing: no model, no network, stable across processes.

Features are the lowercased word unigrams (weight 1) and the character trigrams of each word padded with
spaces (weight 0.5). Each feature is hashed with BLAKE2b (never Python's salted `hash()`) to a bucket and a
sign; the vector is L2-normalised, so a dot product is the cosine similarity. Texts sharing words or word
pieces land near each other, which is what the local model provider and the memory service need.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator

__all__ = ["DEFAULT_DIM", "cosine", "hash_embedding", "tokenize"]

DEFAULT_DIM = 256
_WORD = re.compile(r"\w+", re.UNICODE)
_TRIGRAM_WEIGHT = 0.5


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of `text`."""
    return _WORD.findall(text.lower())


def _features(text: str) -> Iterator[tuple[str, float]]:
    for word in tokenize(text):
        yield f"w:{word}", 1.0
        padded = f" {word} "
        for i in range(len(padded) - 2):
            yield f"c:{padded[i : i + 3]}", _TRIGRAM_WEIGHT


def hash_embedding(text: str, dim: int = DEFAULT_DIM) -> list[float]:
    """A unit-length `dim`-dimensional vector for `text` (all zeros for text without words)."""
    if dim <= 0:
        raise ValueError("dim must be positive")
    vector = [0.0] * dim
    for feature, weight in _features(text):
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        sign = 1.0 if number & 1 else -1.0
        vector[(number >> 1) % dim] += sign * weight
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors of equal length (0 when either is all zeros)."""
    if len(a) != len(b):
        raise ValueError("vectors differ in length")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
