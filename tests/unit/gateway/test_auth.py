from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from agentflow_gateway.auth import Authenticator, HS256Verifier, Principal, PublicKeyVerifier, Role
from agentflow_gateway.rbac import authorize, required_role
from agentflow_gateway.routes import build_methods
from agentflow_runtime.errors import PermissionDenied, Unauthenticated
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.gateway.conftest import SECRET, make_token

METHODS = build_methods()


def _auth(token: str | None) -> Principal:
    header = None if token is None else f"Bearer {token}"
    return Authenticator(HS256Verifier(SECRET)).authenticate(header)


def test_valid_token() -> None:
    principal = _auth(make_token("admin", tenant="acme", sub="alice"))
    assert principal == Principal(subject="alice", tenant="acme", role=Role.ADMIN)
    assert dict(principal.metadata()) == {
        "x-af-tenant": "acme",
        "x-af-principal": "alice",
        "x-af-role": "admin",
    }


def test_tenant_falls_back_to_tid_and_role_to_viewer() -> None:
    principal = _auth(make_token(None, tenant=None, tid="t9"))
    assert principal.tenant == "t9"
    assert principal.role is Role.VIEWER


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "TOKEN_MISSING"),
        ("", "TOKEN_MISSING"),
        ("Basic abc", "TOKEN_MISSING"),
        ("Bearer ", "TOKEN_MISSING"),
    ],
)
def test_missing_token(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        Authenticator(HS256Verifier(SECRET)).authenticate(header)
    assert caught.value.reason == reason


def test_expired_token() -> None:
    with pytest.raises(Unauthenticated) as caught:
        _auth(make_token(exp_in=-60))
    assert caught.value.reason == "TOKEN_EXPIRED"


# Factories, not tokens: a token minted at collection time may have expired by the time the test runs
# (the suite runs the integration tests first), which would make the check pass or fail for the wrong reason.
@pytest.mark.parametrize(
    "mint",
    [
        lambda: make_token(secret="another-secret-of-sufficient-length"),
        lambda: "not.a.jwt",
        lambda: make_token(sub=None),
        lambda: make_token(role="root"),
        lambda: jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"),  # no exp
        lambda: jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
    ],
    ids=["wrong-secret", "not-a-jwt", "no-subject", "unknown-role", "no-exp", "wrong-algorithm"],
)
def test_invalid_tokens(mint: Callable[[], str]) -> None:
    with pytest.raises(Unauthenticated) as caught:
        _auth(mint())
    assert caught.value.reason == "TOKEN_INVALID"


def test_audience_checked_when_configured() -> None:
    verifier = HS256Verifier(SECRET, audience="agentflow")
    good = make_token(aud="agentflow")
    assert Authenticator(verifier).authenticate(f"Bearer {good}").subject == "alice"
    with pytest.raises(Unauthenticated):
        Authenticator(verifier).authenticate(f"Bearer {make_token(aud='other')}")
    # Without a configured audience, a token's aud is not held against it.
    assert _auth(make_token(aud="anything")).subject == "alice"


def test_cached_token_still_expires() -> None:
    auth = Authenticator(HS256Verifier(SECRET))
    token = make_token(exp_in=1)
    assert auth.authenticate(f"Bearer {token}").subject == "alice"
    time.sleep(1.1)
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {token}")


def test_public_key_verifier_es256() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {"sub": "svc", "exp": int(time.time()) + 60, "role": "developer"},
        key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    auth = Authenticator(PublicKeyVerifier({"k1": key.public_key()}))
    assert auth.authenticate(f"Bearer {token}").role is Role.DEVELOPER
    with pytest.raises(Unauthenticated):
        Authenticator(PublicKeyVerifier({"k2": key.public_key()})).authenticate(f"Bearer {token}")


def _principal(role: Role) -> Principal:
    return Principal(subject="u", tenant="t", role=role)


def test_viewer_reads_only() -> None:
    viewer = _principal(Role.VIEWER)
    authorize(viewer, METHODS["/agentflow.runs.v1.RunService/GetRun"])
    authorize(viewer, METHODS["/agentflow.runs.v1.RunService/WatchRun"])
    with pytest.raises(PermissionDenied) as caught:
        authorize(viewer, METHODS["/agentflow.runs.v1.RunService/StartRun"])
    assert caught.value.reason == "ROLE_NOT_ALLOWED"


def test_developer_writes_but_audit_needs_admin() -> None:
    developer = _principal(Role.DEVELOPER)
    authorize(developer, METHODS["/agentflow.runs.v1.RunService/StartRun"])
    authorize(developer, METHODS["/agentflow.tools.v1.ToolService/DeleteTool"])
    for name in ("ListAuditEvents", "VerifyAuditLog"):
        method = METHODS[f"/agentflow.audit.v1.AuditService/{name}"]
        assert required_role(method) is Role.ADMIN
        with pytest.raises(PermissionDenied):
            authorize(developer, method)
        authorize(_principal(Role.ADMIN), method)
