"""The start-up probe: runs a check program inside the sandbox and refuses to serve unless it is isolated.

The program (`CHECKS`, run by the sandbox's own Python) reports what it can see and do; `verdict` turns
that into None (isolated) or the first problem. It checks: not root, no capability, `no_new_privs`, the
syscall filter (where there is one); its own
pid namespace (a handful of pids, none of the service's); no network interface but loopback; `/`, `/usr`
and `/etc` not writable; a host file outside the binds invisible; the workdir writable; an environment
holding only what was sent.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import textwrap
from contextlib import aclosing
from pathlib import Path
from typing import Any

from agentflow_tool_sandbox import seccomp
from agentflow_tool_sandbox.bwrap import BwrapRunner
from agentflow_tool_sandbox.events import Chunk, Result, Stream
from agentflow_tool_sandbox.spec import Limits, Permissions, ProcessSpec

log = logging.getLogger("agentflow.tool_sandbox.probe")

CHECKS = textwrap.dedent("""
    import json, os, socket, sys
    args = json.load(sys.stdin)
    report = {"uid": os.getuid(), "euid": os.geteuid(), "env": sorted(os.environ)}
    status = {}
    with open("/proc/self/status", "rb") as f:
        for line in f:
            key, _, value = line.decode().partition(":")
            status[key] = value.strip()
    report["caps"] = {k: status.get(k) for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb")}
    report["no_new_privs"] = status.get("NoNewPrivs")
    report["seccomp"] = status.get("Seccomp")
    report["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    report["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    writable = []
    for d in ("/", "/usr", "/etc", "/sandbox"):
        try:
            with open(os.path.join(d, ".af-probe"), "w") as f:
                f.write("x")
            writable.append(d)
        except OSError:
            pass
    report["writable_system"] = writable
    report["host_file_visible"] = os.path.exists(args["host_file"])
    try:
        with open(".af-probe", "w") as f:
            f.write("ok")
        report["workdir_writable"] = True
    except OSError:
        report["workdir_writable"] = False
    print(json.dumps(report))
""")
PROBE_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}
"""Variables the probe may see: the base ones (bwrap and the shell-less exec add PWD at most)."""


async def probe(runner: BwrapRunner) -> str | None:
    """Run the checks in the sandbox; None when isolated, else what is wrong (also logged)."""
    try:
        problem = await _probe(runner)
    except Exception as exc:
        problem = f"the probe could not run: {exc}"
    if problem is None:
        log.info("sandbox probe passed: tools run isolated", extra={"fields": {"backend": runner.name}})
    else:
        log.error("sandbox probe FAILED: refusing to execute tools", extra={"fields": {"problem": problem}})
    return problem


async def _probe(runner: BwrapRunner) -> str | None:
    with tempfile.TemporaryDirectory(prefix="af-probe-") as host_dir:
        host_file = os.path.join(host_dir, "host-secret")
        Path(host_file).write_text("must not be visible in the sandbox", encoding="utf-8")  # noqa: ASYNC240
        spec = ProcessSpec(command=("{python}", "-I", "-S", "-c", CHECKS))
        limits = Limits(wall_time_seconds=30, cpu_seconds=10, memory_bytes=512 * 1024 * 1024)
        stdout, stderr = b"", b""
        result: Result | None = None
        events = runner.run_unchecked(spec, limits, {"host_file": host_file}, Permissions())
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Chunk):
                    if event.stream is Stream.STDOUT:
                        stdout += event.data
                    else:
                        stderr += event.data
                else:
                    result = event
    if result is None or result.exit_code != 0:
        code = "none" if result is None else result.exit_code
        return f"the probe exited with {code}: {stderr.decode(errors='replace').strip()[-500:]}"
    filtered = runner.config.seccomp and seccomp.supported()
    return verdict(json.loads(stdout), service_pid=os.getpid(), seccomp_expected=filtered)


def verdict(report: dict[str, Any], *, service_pid: int, seccomp_expected: bool = False) -> str | None:
    """The first isolation problem in a probe report, None when there is none."""
    if report["uid"] == 0 or report["euid"] == 0:
        return "the tool runs as root"
    held = {k: v for k, v in report["caps"].items() if v is None or int(v, 16) != 0}
    if held:
        return f"the tool holds capabilities: {held}"
    if report["no_new_privs"] != "1":
        return "no_new_privs is not set"
    if seccomp_expected and report.get("seccomp") != "2":
        return "the syscall filter is not loaded"
    pids = report["pids"]
    if len(pids) > 4 or (service_pid in pids and service_pid > 4):
        return f"the tool sees {len(pids)} processes: no private pid namespace"
    if report["interfaces"] != ["lo"]:
        return f"the tool sees network interfaces {report['interfaces']}: no private network namespace"
    if report["writable_system"]:
        return f"the tool can write to {report['writable_system']}"
    if report["host_file_visible"]:
        return "the tool can see a host file outside its binds"
    if not report["workdir_writable"]:
        return "the tool's workdir is not writable"
    extra = set(report["env"]) - PROBE_ENV
    if extra:
        return f"the tool's environment holds unexpected variables {sorted(extra)}"
    return None
