"""gRPC credentials from the certificate directory, and the peer identity of a call."""

from __future__ import annotations

from pathlib import Path

import grpc

from agentflow_runtime.certs import SPIFFE_PREFIX, ca_path, cert_path, key_path
from agentflow_runtime.errors import FailedPrecondition


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"certificate file {path} is missing; run `af certs init`", reason="CERTIFICATE_MISSING"
        ) from exc


def server_credentials(cert_dir: Path, identity: str) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate signed by the mesh CA."""
    return grpc.ssl_server_credentials(
        [(_read(key_path(cert_dir, identity)), _read(cert_path(cert_dir, identity)))],
        root_certificates=_read(ca_path(cert_dir)),
        require_client_auth=True,
    )


def channel_credentials(cert_dir: Path, identity: str) -> grpc.ChannelCredentials:
    """Client credentials presenting `identity`'s certificate and trusting the mesh CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_path(cert_dir)),
        private_key=_read(key_path(cert_dir, identity)),
        certificate_chain=_read(cert_path(cert_dir, identity)),
    )


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> str:
    """The mesh identity in the peer certificate's SPIFFE URI SAN, or "" when there is none."""
    auth = context.auth_context()
    for san in auth.get("x509_subject_alternative_name", []):
        text = san.decode() if isinstance(san, bytes) else str(san)
        if text.startswith(SPIFFE_PREFIX):
            return text[len(SPIFFE_PREFIX) :]
    return ""
