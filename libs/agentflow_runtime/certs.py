"""Dev certificate authority: one CA, one certificate per service (SPIFFE URI SAN), one client certificate.

Production mounts real certificates at the same paths (`ca.pem`, `<name>.pem`, `<name>-key.pem`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_PREFIX = "spiffe://agentflow/"
CLIENT_IDENTITY = "client"
_VALIDITY = dt.timedelta(days=365)


def spiffe_id(identity: str) -> str:
    """The URI SAN naming a mesh identity."""
    return SPIFFE_PREFIX + identity


def cert_path(cert_dir: Path, identity: str) -> Path:
    return cert_dir / f"{identity}.pem"


def key_path(cert_dir: Path, identity: str) -> Path:
    return cert_dir / f"{identity}-key.pem"


def ca_path(cert_dir: Path) -> Path:
    return cert_dir / "ca.pem"


def init_dev_certs(cert_dir: Path, identities: Iterable[str], *, force: bool = False) -> list[Path]:
    """Create the CA (once) and a certificate for each identity that lacks one; return what was written."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_key_file = cert_dir / "ca-key.pem"
    if force or not ca_path(cert_dir).exists() or not ca_key_file.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write_key(ca_key_file, ca_key)
        ca_path(cert_dir).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        written += [ca_path(cert_dir), ca_key_file]
        force = True
    ca_key_loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_path(cert_dir).read_bytes())
    for identity in identities:
        if not force and cert_path(cert_dir, identity).exists() and key_path(cert_dir, identity).exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf_certificate(identity, key, ca_key_loaded, ca_cert)
        _write_key(key_path(cert_dir, identity), key)
        cert_path(cert_dir, identity).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        written += [cert_path(cert_dir, identity), key_path(cert_dir, identity)]
    return written


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AgentFlow dev CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY * 5)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    identity: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(identity)),
        x509.DNSName(identity),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
