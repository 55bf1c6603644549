"""`af`: the one CLI — serve a service, start the mesh, run workflows, manage certificates."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from agentflow_runtime.certs import CLIENT_IDENTITY, init_dev_certs
from agentflow_runtime.settings import SERVICES, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="af", description="AgentFlow command line")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)
    sub.add_parser("up", help="start the whole mesh locally; Ctrl-C stops it")
    certs = sub.add_parser("certs", help="dev certificates")
    certs.add_argument("action", choices=["init"])
    certs.add_argument("--force", action="store_true", help="replace existing certificates")
    sub.add_parser("health", help="health of every service")
    run = sub.add_parser("run", help="run a workflow through the REST edge and stream its events")
    run.add_argument("workflow")
    run.add_argument("--input", default="{}", help="run input as JSON")
    run.add_argument("--token", help="bearer token (default: a dev token from the settings' secret)")
    watch = sub.add_parser("watch", help="stream a run's events (resumable with --after)")
    watch.add_argument("run", help="runs/<id> or <id>")
    watch.add_argument("--after", type=int, default=0, help="only events after this sequence number")
    watch.add_argument("--token", help="bearer token (default: a dev token from the settings' secret)")
    audit = sub.add_parser("audit", help="verify or export the audit chain")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="verify the chain (the service's, or an export with --file)")
    verify.add_argument("--file", type=Path, help="an export to verify offline, without any service")
    export = audit_sub.add_parser("export", help="write every event as JSON lines")
    export.add_argument("out", type=Path)
    approvals = sub.add_parser("approvals", help="list approval tickets; approve or reject one")
    approvals_sub = approvals.add_subparsers(dest="approvals_command", required=True)
    listed = approvals_sub.add_parser("list", help="tickets, newest first")
    listed.add_argument("--run", default="", help="only this run's (runs/<id> or <id>)")
    listed.add_argument("--state", default="", help="pending, approved, rejected or expired")
    for verb in ("approve", "reject"):
        decide = approvals_sub.add_parser(verb, help=f"{verb} a pending ticket")
        decide.add_argument("ticket", help="approvals/<id> or <id>")
        decide.add_argument("--comment", default="")
    for command in approvals_sub.choices.values():
        command.add_argument("--token", help="bearer token (default: a dev token from the settings' secret)")
    sub.add_parser("demo", help="start the mesh, run the demo workflow through the edge, stop")
    token = sub.add_parser("token", help="print a dev bearer token")
    token.add_argument("--tenant", default="default")
    token.add_argument("--role", default="admin", choices=["admin", "developer", "viewer"])
    token.add_argument("--subject", default="dev")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    if args.command == "serve":
        from agentflow_runtime.server import serve

        from agentflow_cli.services import build

        serve(build(args.service, settings), settings)
        return 0
    if args.command == "certs":
        written = init_dev_certs(settings.certs, [*SERVICES, CLIENT_IDENTITY], force=args.force)
        print(f"{len(written)} files written to {settings.certs}" if written else "certificates present")
        return 0
    if args.command == "up":
        from agentflow_cli.supervisor import run_up

        return asyncio.run(run_up(settings))
    if args.command == "health":
        from agentflow_cli.health import check

        statuses = asyncio.run(check(settings, list(SERVICES)))
        for name, status in statuses.items():
            print(f"{name:14} {status}")
        return 0 if all(s == "SERVING" for s in statuses.values()) else 1
    if args.command == "token":
        from agentflow_cli.tokens import dev_token

        print(dev_token(settings, subject=args.subject, tenant=args.tenant, role=args.role))
        return 0
    if args.command == "run":
        return asyncio.run(_run(settings, args.workflow, args.input, args.token))
    if args.command == "watch":
        return asyncio.run(_watch(settings, args.run, args.after, args.token))
    if args.command == "audit":
        from agentflow_cli import audit_cmd

        if args.audit_command == "export":
            return asyncio.run(audit_cmd.export(settings, args.out))
        if args.file is not None:
            return audit_cmd.verify_file(args.file)
        return asyncio.run(audit_cmd.verify_online(settings))
    if args.command == "approvals":
        from agentflow_cli import approvals_cmd

        if args.approvals_command == "list":
            return asyncio.run(approvals_cmd.list_tickets(settings, args.run, args.state, args.token))
        approve = args.approvals_command == "approve"
        return asyncio.run(approvals_cmd.decide(settings, args.ticket, approve, args.comment, args.token))
    if args.command == "demo":
        from agentflow_cli.demo import demo

        return asyncio.run(demo(settings))
    return 2


async def _watch(settings: Settings, run: str, after: int, token: str | None) -> int:
    from agentflow_cli.rest import EdgeClient
    from agentflow_cli.tokens import dev_token
    from agentflow_cli.watch import watch

    client = EdgeClient(f"http://{settings.host}:{settings.http_port}", token or dev_token(settings))
    try:
        return await watch(client, run, after)
    finally:
        await client.close()


async def _run(settings: Settings, workflow: str, raw_input: str, token: str | None) -> int:
    from agentflow_cli.rest import EdgeClient, EdgeError
    from agentflow_cli.runs import run_workflow
    from agentflow_cli.tokens import dev_token

    try:
        run_input = orjson.loads(raw_input)
    except orjson.JSONDecodeError as exc:
        print(f"--input is not JSON: {exc}", file=sys.stderr)
        return 2
    client = EdgeClient(f"http://{settings.host}:{settings.http_port}", token or dev_token(settings))
    try:
        run = await run_workflow(client, workflow, run_input)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(orjson.dumps(run, option=orjson.OPT_INDENT_2).decode())
    return 0 if run.get("state") == "RUN_STATE_SUCCEEDED" else 1
