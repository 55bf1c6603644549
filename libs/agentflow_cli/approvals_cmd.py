"""`af approvals`: list the tickets that hold runs, and approve or reject one, through the REST edge."""

from __future__ import annotations

import sys
from typing import Any

from agentflow_runtime.settings import Settings

from agentflow_cli.rest import EdgeClient, EdgeError
from agentflow_cli.tokens import dev_token

_STATES = {"pending", "approved", "rejected", "expired"}


def _client(settings: Settings, token: str | None) -> EdgeClient:
    return EdgeClient(f"http://{settings.host}:{settings.http_port}", token or dev_token(settings))


def _name(ticket: str) -> str:
    return ticket if ticket.startswith("approvals/") else f"approvals/{ticket}"


def _line(ticket: dict[str, Any]) -> str:
    request = ticket.get("request") or {}
    what = request.get("tool") or request.get("model") or request.get("kind", "")
    who = f" by {request['agent']}" if request.get("agent") else ""
    state = str(ticket.get("state", "")).removeprefix("APPROVAL_STATE_").lower()
    roles = ",".join(ticket.get("approverRoles") or [])
    expires = ticket.get("expireTime", "-")
    return (
        f"{ticket['name']}  {state:8}  {ticket.get('run', '')} step {ticket.get('stepId', '')}: "
        f"{what}{who}  rule {ticket.get('rule', '')} (deciders: {roles}; expires {expires})"
    )


async def list_tickets(settings: Settings, run: str, state: str, token: str | None) -> int:
    """Print one line per ticket, newest first."""
    query: list[str] = []
    if run:
        query.append(f"run={run if run.startswith('runs/') else 'runs/' + run}")
    if state:
        if state not in _STATES:
            print(f"--state must be one of {', '.join(sorted(_STATES))}", file=sys.stderr)
            return 2
        query.append(f"state=APPROVAL_STATE_{state.upper()}")
    client = _client(settings, token)
    try:
        page_token = ""
        while True:
            path = "/v1/approvals?" + "&".join([*query, *([f"pageToken={page_token}"] if page_token else [])])
            reply = await client.call("GET", path)
            for ticket in reply.get("approvals", []):
                print(_line(ticket))
            page_token = str(reply.get("nextPageToken") or "")
            if not page_token:
                return 0
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()


async def decide(settings: Settings, ticket: str, approve: bool, comment: str, token: str | None) -> int:
    """Approve or reject one ticket; prints it as decided."""
    client = _client(settings, token)
    try:
        body = {"approve": approve, "comment": comment}
        decided = await client.call("POST", f"/v1/{_name(ticket)}:decide", body)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(_line(decided))
    return 0
