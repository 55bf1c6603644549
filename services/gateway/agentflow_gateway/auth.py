"""Bearer-token authentication: a `Verifier` checks the JWT, the `Authenticator` derives the principal.

`HS256Verifier` checks tokens signed with the shared secret (`settings.jwt_secret`). Asymmetric keys
(RS256/ES256, e.g. from a JWKS document) plug in as another `Verifier`: `PublicKeyVerifier` takes the keys by
`kid`. Verified tokens are cached until they expire, so the hot path pays for a signature check once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import jwt
from agentflow_runtime.context import PRINCIPAL_KEY, ROLE_KEY, TENANT_KEY
from agentflow_runtime.errors import Unauthenticated

__all__ = [
    "Authenticator",
    "HS256Verifier",
    "Principal",
    "PublicKeyVerifier",
    "Role",
    "Verifier",
    "bearer_token",
]

DEFAULT_TENANT = "default"
_REQUIRED_CLAIMS = ["sub", "exp"]


class Role(StrEnum):
    """What a caller may do: viewers read, developers also write, admins also read the audit log."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    subject: str
    tenant: str
    role: Role

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Identity metadata for calls into the mesh."""
        return ((TENANT_KEY, self.tenant), (PRINCIPAL_KEY, self.subject), (ROLE_KEY, self.role.value))


class Verifier(Protocol):
    """Checks a token's signature and standard claims, returning its claims or raising `Unauthenticated`."""

    def verify(self, token: str) -> Mapping[str, Any]: ...


class HS256Verifier:
    """Tokens signed with a shared secret; `aud` is checked only when an audience is configured."""

    def __init__(self, secret: str, *, audience: str | None = None, leeway: float = 0.0) -> None:
        self._secret = secret
        self._audience = audience
        self._leeway = leeway

    def verify(self, token: str) -> Mapping[str, Any]:
        return _decode(token, self._secret, ["HS256"], self._audience, self._leeway)


class PublicKeyVerifier:
    """Tokens signed with asymmetric keys (RS256/ES256), chosen by the token's `kid` header."""

    def __init__(
        self,
        keys: Mapping[str, Any],
        *,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        audience: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._keys = dict(keys)
        self._algorithms = list(algorithms)
        self._audience = audience
        self._leeway = leeway

    def verify(self, token: str) -> Mapping[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _invalid("malformed token") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("unknown signing key")
        return _decode(token, key, self._algorithms, self._audience, self._leeway)


def _decode(
    token: str, key: Any, algorithms: list[str], audience: str | None, leeway: float
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            leeway=leeway,
            options={"require": _REQUIRED_CLAIMS, "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
    except jwt.PyJWTError as exc:
        raise _invalid(str(exc)) from None
    return claims


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated(f"invalid token: {why}", reason="TOKEN_INVALID")


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value, or `Unauthenticated` (TOKEN_MISSING)."""
    if not authorization:
        raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_MISSING")
    return token


class Authenticator:
    """Turns an `Authorization` value into a `Principal`, caching verified tokens until they expire."""

    def __init__(self, verifier: Verifier, *, cache_size: int = 4096) -> None:
        self._verifier = verifier
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size

    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > time.time():
                return cached[0]
            del self._cache[token]
        claims = self._verifier.verify(token)
        principal = _principal(claims)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (principal, float(claims["exp"]))
        return principal


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _invalid("'sub' must be a non-empty string")
    tenant = claims.get("tenant") or claims.get("tid") or DEFAULT_TENANT
    if not isinstance(tenant, str):
        raise _invalid("'tenant' must be a string")
    role_claim = claims.get("role")
    try:
        role = Role(role_claim) if role_claim is not None else Role.VIEWER
    except ValueError:
        raise _invalid(f"unknown role {role_claim!r}") from None
    return Principal(subject=subject, tenant=tenant, role=role)
