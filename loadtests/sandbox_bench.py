"""`make bench` (third part): what the sandbox costs a tool call.

1. Spawn-to-exit of a trivial tool, in this process (no mesh): the median time from asking to run it to
   its result, for `/bin/true` and for `python -I -S -c pass`, three ways:
   - `subprocess`  a plain `asyncio.create_subprocess_exec` + wait (the floor);
   - `process`     the development backend (`ProcessRunner`: launcher, rlimits, pipes, group kill);
   - `bwrap`       the default backend (`BwrapRunner`: a fresh bubblewrap sandbox per call);
   - `bwrap+egress` the same with a profile naming a host: an egress proxy session per call and the
                   loopback forwarder started before the tool.
   Printed as medians (and p95) in ms and the ratio of each backend to the plain subprocess.
2. Streamed output throughput through `ExecuteTool`: the whole mesh as `af up` starts it (its tool-sandbox on
   its default backend), a tool that writes `--stream-mb` MiB to stdout in 64 KiB writes, called over gRPC
   with mTLS as the worker calls it; MB/s = bytes received in chunks / (request sent -> result received).

Prints figures and asserts nothing about speed. Exits 1 when a call fails (a non-zero exit, missing output),
2 when the mesh does not start.

Usage: .venv/bin/python loadtests/sandbox_bench.py [--spawns 40] [--stream-mb 16] [--streams 5] [--json FILE]
(or BENCH_SPAWNS, BENCH_STREAM_MB, BENCH_STREAMS, BENCH_JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_cli.localmesh import running_mesh
from agentflow_runtime.clients import Channels
from agentflow_tool_sandbox.bwrap import BwrapConfig, BwrapRunner, bwrap_path
from agentflow_tool_sandbox.egress import EgressProxy
from agentflow_tool_sandbox.events import Event, Result
from agentflow_tool_sandbox.executor import ProcessBackendConfig, ProcessRunner
from agentflow_tool_sandbox.probe import probe
from agentflow_tool_sandbox.spec import EgressRule, Limits, Permissions, ProcessSpec

REPO = Path(__file__).resolve().parent.parent
WARMUP = 3
CALL_TIMEOUT = 120.0
TRIVIAL_TOOLS: dict[str, tuple[str, ...]] = {
    "/bin/true": ("/bin/true",),
    "python -c pass": ("{python}", "-I", "-S", "-c", "pass"),
}
STREAM_TOOL = "bench-stream"
STREAM_SOURCE = (
    "import sys\n"
    "block = b'x' * 65535 + b'\\n'\n"
    "for _ in range(int(sys.argv[1]) * 16):\n"
    "    sys.stdout.buffer.write(block)\n"
)

Execute = Callable[[ProcessSpec], AsyncIterable[Event]]


@dataclass(frozen=True)
class Options:
    spawns: int
    stream_mb: int
    streams: int
    json_out: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--spawns", type=int, default=int(env.get("BENCH_SPAWNS", "40")))
    parser.add_argument("--stream-mb", type=int, default=int(env.get("BENCH_STREAM_MB", "16")))
    parser.add_argument("--streams", type=int, default=int(env.get("BENCH_STREAMS", "5")))
    parser.add_argument("--json", dest="json_out", default=env.get("BENCH_JSON", ""), help="write figures")
    args = parser.parse_args(argv)
    if min(args.spawns, args.streams) < 1 or not 1 <= args.stream_mb <= 16:
        parser.error("--spawns and --streams must be positive; --stream-mb between 1 and 16 (the output cap)")
    return Options(args.spawns, args.stream_mb, args.streams, Path(args.json_out) if args.json_out else None)


@dataclass
class Spawn:
    """Spawn-to-exit of one trivial tool on one backend, in milliseconds."""

    tool: str
    backend: str
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    ratio: float = 0.0
    """p50 over the plain subprocess's p50 for the same tool."""
    note: str = ""


@dataclass
class Stream:
    """Output streamed through ExecuteTool."""

    backend: str = ""
    bytes_per_call: int = 0
    calls: int = 0
    mb_per_s: list[float] = field(default_factory=list)
    chunks_per_call: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.mb_per_s) if self.mb_per_s else 0.0


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1. spawn to exit --------------------------------------------------------------------------------------


async def plain_subprocess(spec: ProcessSpec) -> AsyncIterable[Event]:
    argv = [arg.replace("{python}", sys.executable) for arg in spec.command]
    child = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await child.communicate()
    yield Result(exit_code=child.returncode or 0)


async def time_calls(execute: Execute, spec: ProcessSpec, count: int) -> list[float]:
    """Seconds from asking to the result, for `count` calls after a short warm-up; raises on a failure."""
    seconds = []
    for i in range(WARMUP + count):
        started = time.perf_counter()
        result = None
        async for event in execute(spec):
            if isinstance(event, Result):
                result = event
        elapsed = time.perf_counter() - started
        if result is None or result.exit_code != 0:
            raise RuntimeError(f"{spec.command} failed: {result}")
        if i >= WARMUP:
            seconds.append(elapsed)
    return seconds


async def spawn_figures(options: Options, scratch: Path) -> list[Spawn]:
    limits = Limits(wall_time_seconds=60)
    process = ProcessRunner(ProcessBackendConfig(scratch_root=scratch / "process"))
    backends: dict[str, Execute] = {
        "subprocess": plain_subprocess,
        "process": lambda spec: process.execute(spec, limits, {}),
    }
    sandboxed, why_not = await sandboxed_backends(scratch, limits)
    backends.update(sandboxed)
    figures = []
    for tool, command in TRIVIAL_TOOLS.items():
        spec = ProcessSpec(command)
        floor = 0.0
        for backend, execute in backends.items():
            seconds = await time_calls(execute, spec, options.spawns)
            p50 = statistics.median(seconds) * 1000
            floor = floor or p50
            figures.append(Spawn(tool, backend, p50, quantile(seconds, 0.95) * 1000, p50 / floor))
        if not sandboxed:
            figures.append(Spawn(tool, "bwrap", note=why_not))
    return figures


async def sandboxed_backends(scratch: Path, limits: Limits) -> tuple[dict[str, Execute], str]:
    """The bubblewrap backend, probed as the service probes it: plain (`bwrap`) and with an egress profile
    (`bwrap+egress`: a proxy session and the forwarder before the tool). Empty, and why, when it cannot
    isolate here."""
    found = bwrap_path("bwrap")
    if found is None:
        return {}, "bubblewrap is not installed (make install)"
    runner = BwrapRunner(BwrapConfig(bwrap=found, egress=EgressProxy(root=scratch / "egress")))
    problem = await probe(runner)
    runner.mark_available(problem)
    if problem is not None:
        return {}, f"bubblewrap cannot isolate here: {problem}"
    egress = Permissions(egress=(EgressRule("127.0.0.1", 9),))
    return {
        "bwrap": lambda spec: runner.execute(spec, limits, {}),
        "bwrap+egress": lambda spec: runner.execute(spec, limits, {}, permissions=egress, tool_id="bench"),
    }, ""


# --- 2. streamed output through ExecuteTool ----------------------------------------------------------------


def bench_catalog(root: Path, stream_mb: int) -> Path:
    """The repository's catalog plus the streaming tool (output cap = what it prints)."""
    catalog = root / "catalog"
    shutil.copytree(REPO / "catalog", catalog)
    (catalog / "tools" / f"{STREAM_TOOL}.yaml").write_text(
        json.dumps(
            {
                "id": STREAM_TOOL,
                "description": "Writes N MiB to stdout in 64 KiB writes (sandbox bench).",
                "input_schema": {"type": "object", "properties": {}},
                "process": {"command": ["{python}", "-I", "-S", "-c", STREAM_SOURCE, str(stream_mb)]},
                "limits": {
                    "wall_time_seconds": CALL_TIMEOUT,
                    "cpu_seconds": 60,
                    "memory_bytes": 512 * 1024 * 1024,
                    "output_bytes": stream_mb * 1024 * 1024,
                },
            }
        )
    )
    return catalog


async def stream_calls(channels: Channels, options: Options) -> Stream:
    stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
    wanted = options.stream_mb * 1024 * 1024
    figures = Stream(bytes_per_call=wanted)
    chunks = 0
    for i in range(1 + options.streams):
        request = tools_pb2.ExecuteToolRequest(name=f"tools/{STREAM_TOOL}")
        received = 0
        result: tools_pb2.ToolResult | None = None
        started = time.perf_counter()
        async for reply in stub.ExecuteTool(request, timeout=CALL_TIMEOUT):
            if reply.HasField("chunk"):
                received += len(reply.chunk.data)
                chunks += i > 0
            else:
                result = reply.result
        elapsed = time.perf_counter() - started
        if result is None or result.exit_code != 0 or received != wanted:
            raise RuntimeError(f"stream call failed: {received} of {wanted} bytes, result {result}")
        if i > 0:  # the first call warms up
            figures.mb_per_s.append(received / elapsed / 1e6)
    figures.calls = options.streams
    figures.chunks_per_call = chunks / options.streams
    return figures


def stream_figures(options: Options, scratch: Path) -> Stream:
    catalog = bench_catalog(scratch, options.stream_mb)
    with running_mesh(scratch / "mesh", catalog) as (settings, _mesh):

        async def run() -> Stream:
            channels = Channels(settings, "worker")
            try:
                return await stream_calls(channels, options)
            finally:
                await channels.close()

        figures = asyncio.run(run())
        figures.backend = settings.sandbox_backend
    return figures


# --- report ------------------------------------------------------------------------------------------------


def report(spawns: list[Spawn], stream: Stream) -> None:
    load = os.getloadavg()[0]
    print(
        f"\nsandbox bench on {os.cpu_count()} cores, load average {load:.1f} (other work skews every figure)"
    )
    print("sandbox: spawn-to-exit of a trivial tool (median / p95 ms; ratio = median / plain subprocess)")
    print(f"  {'tool':<16} {'backend':<13} {'p50 ms':>8} {'p95 ms':>8} {'ratio':>6}")
    for s in spawns:
        if s.note:
            print(f"  {s.tool:<16} {s.backend:<13} {'-':>8} {'-':>8} {'-':>6}  ({s.note})")
        else:
            print(f"  {s.tool:<16} {s.backend:<13} {s.p50_ms:8.1f} {s.p95_ms:8.1f} {s.ratio:6.2f}")
    print(
        f"\nsandbox: streamed output through ExecuteTool (backend {stream.backend}, "
        f"{stream.bytes_per_call / 2**20:.0f} MiB per call, {stream.calls} calls, "
        f"{stream.chunks_per_call:.0f} chunks per call)"
    )
    rates = ", ".join(f"{r:.1f}" for r in stream.mb_per_s)
    print(f"  median {stream.median:.1f} MB/s  (each call: {rates})")


async def spawns_main(options: Options, scratch: Path) -> list[Spawn]:
    return await spawn_figures(options, scratch)


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="af-sandbox-bench-"))
    try:
        spawns = asyncio.run(spawns_main(options, scratch))
        try:
            stream = stream_figures(options, scratch)
        except RuntimeError as exc:
            if "did not come up" not in str(exc):
                raise
            print(f"the mesh did not start: {exc}", file=sys.stderr)
            return 2
        report(spawns, stream)
        if options.json_out is not None:
            figures = {
                "spawn": [asdict(s) for s in spawns],
                "stream": asdict(stream) | {"median": stream.median},
            }
            options.json_out.write_text(json.dumps(figures, indent=2))
        return 0
    except RuntimeError as exc:
        print(f"sandbox bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
