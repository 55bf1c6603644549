"""Dev certificates name their identity in a SPIFFE URI SAN; timestamps come back aware UTC on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from agentflow_runtime.certs import init_dev_certs, spiffe_id
from agentflow_runtime.db import Database, UtcDateTime
from agentflow_runtime.protojson import integral_numbers
from cryptography import x509
from sqlalchemy import Column, Integer, MetaData, Table, insert, select


def test_dev_certificates_carry_spiffe_identities_and_are_kept(tmp_path: Path) -> None:
    written = init_dev_certs(tmp_path, ["worker", "client"])
    assert {p.name for p in written} >= {"ca.pem", "worker.pem", "worker-key.pem", "client.pem"}
    cert = x509.load_pem_x509_certificate((tmp_path / "worker.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert spiffe_id("worker") in sans.get_values_for_type(x509.UniformResourceIdentifier)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert cert.issuer == ca.subject
    assert (tmp_path / "worker-key.pem").stat().st_mode & 0o077 == 0
    assert init_dev_certs(tmp_path, ["worker", "client"]) == []  # idempotent


async def test_utc_datetime_round_trips_aware_on_sqlite(tmp_path: Path) -> None:
    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), Column("at", UtcDateTime()))
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.create_all(metadata)
    local = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    async with db.begin() as conn:
        await conn.execute(insert(table).values(id=1, at=local))
    async with db.connect() as conn:
        stored = (await conn.execute(select(table.c.at))).scalar_one()
    await db.dispose()
    assert stored.tzinfo is not None
    assert stored == local
    assert stored.utcoffset() == timedelta(0)
    assert stored.astimezone(UTC).hour == 1


def test_integral_numbers_print_as_integers() -> None:
    assert integral_numbers({"a": 34.0, "b": [1.5, 2.0], "c": {"d": "x"}}) == {
        "a": 34,
        "b": [1.5, 2],
        "c": {"d": "x"},
    }


async def test_concurrent_read_then_write_transactions_wait_and_lose_nothing(tmp_path: Path) -> None:
    """SQLite: deferred transactions that read then write fail at once with 'database is locked' under
    concurrency; write transactions begin IMMEDIATE, so they wait their turn and no update is lost."""
    import asyncio

    from sqlalchemy import update

    metadata = MetaData()
    counter = Table("counter", metadata, Column("id", Integer, primary_key=True), Column("n", Integer))
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await db.create_all(metadata)
    async with db.begin() as conn:
        await conn.execute(insert(counter).values(id=1, n=0))

    async def bump() -> None:
        async with db.begin() as conn:
            n = (await conn.execute(select(counter.c.n))).scalar_one()
            await asyncio.sleep(0.005)
            await conn.execute(update(counter).values(n=n + 1))

    await asyncio.gather(*(bump() for _ in range(20)))
    async with db.connect() as conn:
        assert (await conn.execute(select(counter.c.n))).scalar_one() == 20
    await db.dispose()
