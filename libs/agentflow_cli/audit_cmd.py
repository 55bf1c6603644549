"""`af audit`: verify the chain online, export it, and verify an export offline (no service needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import orjson
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow_runtime import hashchain
from agentflow_runtime.certs import CLIENT_IDENTITY
from agentflow_runtime.clients import Channels
from agentflow_runtime.context import ROLE_KEY
from agentflow_runtime.errors import from_rpc_error
from agentflow_runtime.settings import Settings
from google.protobuf import json_format

_ADMIN = ((ROLE_KEY, "admin"),)


async def verify_online(settings: Settings) -> int:
    """Ask the audit service to recompute its chain; print the verdict."""
    channels = Channels(settings, CLIENT_IDENTITY)
    try:
        stub = audit_pb2_grpc.AuditServiceStub(channels.get("audit"))
        reply = await stub.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(), metadata=_ADMIN, timeout=300)
    except grpc.aio.AioRpcError as exc:
        print(f"error: {from_rpc_error(exc)}", file=sys.stderr)
        return 2
    finally:
        await channels.close()
    return _report(reply.valid, reply.checked_count, reply.first_invalid_seq, reply.reason, reply.head_hash)


async def export(settings: Settings, out: Path) -> int:
    """Write every audit event, in order, as one JSON object a line."""
    channels = Channels(settings, CLIENT_IDENTITY)
    count = 0
    try:
        stub = audit_pb2_grpc.AuditServiceStub(channels.get("audit"))
        token = ""
        with out.open("wb") as sink:
            while True:
                request = audit_pb2.ListAuditEventsRequest(page_size=1000, page_token=token)
                page = await stub.ListAuditEvents(request, metadata=_ADMIN, timeout=60)
                for event in page.audit_events:
                    sink.write(orjson.dumps(json_format.MessageToDict(event)) + b"\n")
                    count += 1
                token = page.next_page_token
                if not token:
                    break
    except grpc.aio.AioRpcError as exc:
        print(f"error: {from_rpc_error(exc)}", file=sys.stderr)
        return 2
    finally:
        await channels.close()
    print(f"{count} events written to {out}")
    return 0


def verify_file(path: Path) -> int:
    """Verify an export offline: recompute every hash from the first entry on."""
    try:
        events = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    result = hashchain.verify(events)
    return _report(result.valid, result.checked, result.first_invalid_seq, result.reason, result.head_hash)


def _report(valid: bool, checked: int, first_invalid: int, reason: str, head: str) -> int:
    if valid:
        print(f"audit chain valid: {checked} entries, head {head}")
        return 0
    print(f"audit chain BROKEN at entry {first_invalid}: {reason} ({checked} entries checked)")
    return 1
