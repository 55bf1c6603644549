"""Secret redaction for anything that is logged or audited.

A key is secret when one of its words (split on `_`, `-`, `.`, spaces and camelCase) is a secret word such as
`password`, `secret`, `token` or `authorization`, or when it spells `api_key`/`apiKey`/`api-key`. Words are
compared whole, so `access_token` and `X-Auth-Token` are redacted but `prompt_tokens` (a count) is not.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
"""What a secret value is replaced with."""

SECRET_WORDS = frozenset({"password", "passwd", "secret", "token", "authorization", "apikey"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def _words(key: str) -> list[str]:
    return [w for w in _SEPARATORS.split(_CAMEL_BOUNDARY.sub("_", key).lower()) if w]


def is_secret_key(key: str, extra_keys: Iterable[str] = ()) -> bool:
    """Whether values under `key` must be redacted; `extra_keys` are further names (e.g. PII fields)."""
    if key.lower() in {k.lower() for k in extra_keys}:
        return True
    words = _words(key)
    if any(w in SECRET_WORDS for w in words):
        return True
    return any(a == "api" and b == "key" for a, b in itertools.pairwise(words))


def redact(obj: Any, *, extra_keys: Iterable[str] = ()) -> Any:
    """A copy of `obj` with the value of every secret key, at any depth, replaced by `REDACTED`."""
    extra = tuple(extra_keys)
    if isinstance(obj, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k, extra) else redact(v, extra_keys=extra)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v, extra_keys=extra) for v in obj]
    return obj
