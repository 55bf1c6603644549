"""Opaque page tokens (AIP-158) over offsets, and page-size clamping."""

from __future__ import annotations

import base64
import binascii
import json

from agentflow_runtime.errors import InvalidArgument


def encode_token(offset: int) -> str:
    """An opaque token for the page starting at `offset`."""
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    """The offset a token stands for; 0 for an empty token."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        offset = json.loads(base64.urlsafe_b64decode(padded.encode()))["o"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            "page_token is not a token this service issued",
            reason="INVALID_PAGE_TOKEN",
            violations=[("page_token", "not a valid page token")],
        ) from exc
    if not isinstance(offset, int) or offset < 0:
        raise InvalidArgument("page_token is out of range", violations=[("page_token", "invalid offset")])
    return offset


def clamp_page_size(size: int, default: int = 50, maximum: int = 500) -> int:
    """The page size to use: `default` for 0, at most `maximum`; negative is an error."""
    if size < 0:
        raise InvalidArgument("page_size must not be negative", violations=[("page_size", "negative")])
    return default if size == 0 else min(size, maximum)
