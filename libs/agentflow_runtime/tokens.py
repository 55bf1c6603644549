"""A simple, deterministic token counter: words and single punctuation marks."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["count_tokens", "split_words", "tokenize"]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD_WITH_SPACE = re.compile(r"\S+\s*")


def tokenize(text: str) -> list[str]:
    """Word and punctuation tokens of `text`."""
    return _TOKEN.findall(text)


def count_tokens(texts: Iterable[str]) -> int:
    """Tokens in all of `texts`."""
    return sum(len(tokenize(text)) for text in texts)


def split_words(text: str) -> list[str]:
    """`text` cut after each run of whitespace; the pieces join back to `text` without leading space."""
    return _WORD_WITH_SPACE.findall(text)
