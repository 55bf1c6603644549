"""Dev tokens: HS256 JWTs signed with the settings' secret, as the edge expects them."""

from __future__ import annotations

import time

import jwt
from agentflow_runtime.settings import Settings


def dev_token(
    settings: Settings, subject: str = "dev", tenant: str = "default", role: str = "admin", ttl: int = 3600
) -> str:
    """A bearer token for the local edge."""
    now = int(time.time())
    claims = {"sub": subject, "tenant": tenant, "role": role, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
