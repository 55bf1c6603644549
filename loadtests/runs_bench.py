"""`make bench` (second part): durable runs of a 5-step workflow through the REST edge, against a floor.

For each database backend (SQLite, the embedded default; PostgreSQL in a throwaway database when
127.0.0.1:5432 answers) it starts the whole mesh as `af up` does, registers a workflow of five chained
`local`-model steps (deterministic, offline, `max_tokens: 1`; each step is a real ModelService/Complete
call that the model-gateway records in its usage ledger under the step's idempotency key) with
`POST /v1/workflows`, then measures two scenarios:

- `sequential`  one run at a time (`--seq-runs`, 30)
- `concurrent`  `--concurrency` (16) runs in flight (`--conc-runs`, 80 in all)

A run is `POST /v1/runs` then `GET /v1/runs/{id}:watch` (NDJSON); its latency is from sending the POST to
receiving the final event (RUN_SUCCEEDED) on the watch stream. Reported per scenario: runs/s, run latency
median/p95, per-step overhead as (run latency)/5, and per-step figures from the journal's event times
(`createTime`, the worker's clock): STEP_STARTED→STEP_SUCCEEDED (the start transaction and the model
call) and the step cycle STEP_SUCCEEDED(i-1)→STEP_SUCCEEDED(i) (everything one step costs the engine).

The floor, in the same bench run and against the same database: a bare loop with the same driver and
engine settings (`agentflow_runtime.db.Database`: SQLAlchemy async with aiosqlite or asyncpg, the services'
pragmas and pool) that writes one row per step, one INSERT + COMMIT each, five per "run", at the same
concurrency. Our throughput is printed as a ratio to it (the aim is >= 0.5).

CPU: utime + stime of every mesh process (`/proc/<pid>/stat`), of this process (the client, or the floor
loop) and the machine's busy time (`/proc/stat`; `other` is the rest — PostgreSQL's server processes on
that backend) over each scenario, as CPU-ms per run.

Exits 1 when a run fails (HTTP error, a run not SUCCEEDED, a timeout, a service died), 2 when the mesh does
not start; never because something is slow.

Usage: .venv/bin/python loadtests/runs_bench.py [--seq-runs 30] [--conc-runs 80] [--concurrency 16]
[--backends sqlite,postgres] [--json FILE] [--keep]
(or BENCH_SEQ_RUNS, BENCH_CONC_RUNS, BENCH_CONCURRENCY, BENCH_BACKENDS, BENCH_JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from agentflow_cli.localmesh import running_mesh
from agentflow_cli.pgtemp import postgres_available, postgres_database
from agentflow_cli.procstat import machine_busy, process_cpu
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token
from agentflow_runtime.db import Database, UtcDateTime
from agentflow_runtime.settings import Settings
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table

REPO = Path(__file__).resolve().parent.parent
STEPS = 5
BACKENDS = ("sqlite", "postgres")
RUN_TIMEOUT = 30.0  # seconds for one run, start to final event (a stuck run fails, not the bench)
WARMUP_RUNS = 4
FINAL = {
    "RUN_EVENT_TYPE_RUN_SUCCEEDED",
    "RUN_EVENT_TYPE_RUN_FAILED",
    "RUN_EVENT_TYPE_RUN_CANCELLED",
}
# Mesh processes with their own CPU column; the rest are summed as "rest".
CPU_COLUMNS = ("gateway", "worker", "model-gateway", "planner")


WORKLOADS = ("model", "value")


def workflow_yaml(workflow_id: str, workload: str = "model") -> str:
    """Five chained steps. `model`: on the deterministic local model, as cheap as a real mesh call gets
    (worker -> model-gateway, whose usage ledger records the step's idempotency key). `value`: value steps
    (computed in the worker, no call), so the figure is the durable step path alone, journal included."""
    lines = [
        f"id: {workflow_id}",
        f"display_name: Bench, five {workload} steps",
        "kind: dag",
        "steps:",
    ]
    for i in range(1, STEPS + 1):
        lines.append(f"  - id: s{i}")
        if workload == "value":
            lines += ["    kind: value", '    value: "ok"']
        else:
            lines += ["    kind: model", "    model: local", '    prompt: "ok"', "    max_tokens: 1"]
        if i > 1:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


# --- options -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seq_runs: int
    conc_runs: int
    concurrency: int
    backends: tuple[str, ...]
    workloads: tuple[str, ...]
    json_out: Path | None
    keep: bool


def parse_args(argv: Sequence[str]) -> Options:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seq-runs", type=int, default=int(env.get("BENCH_SEQ_RUNS", "30")))
    parser.add_argument("--conc-runs", type=int, default=int(env.get("BENCH_CONC_RUNS", "80")))
    parser.add_argument("--concurrency", type=int, default=int(env.get("BENCH_CONCURRENCY", "16")))
    parser.add_argument(
        "--backends",
        default=env.get("BENCH_BACKENDS", ",".join(BACKENDS)),
        help=f"comma-separated subset of {','.join(BACKENDS)}",
    )
    parser.add_argument(
        "--workloads",
        default=env.get("BENCH_WORKLOADS", ",".join(WORKLOADS)),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (the kind of the five steps)",
    )
    parser.add_argument("--json", dest="json_out", default=env.get("BENCH_JSON", ""), help="write figures")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (service logs) afterwards")
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in str(args.backends).split(",") if b.strip())
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    workloads = tuple(w.strip() for w in str(args.workloads).split(",") if w.strip())
    if not workloads or any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: choose from {', '.join(WORKLOADS)}")
    if min(args.seq_runs, args.conc_runs, args.concurrency) < 1:
        parser.error("--seq-runs, --conc-runs and --concurrency must be positive")
    return Options(
        seq_runs=args.seq_runs,
        conc_runs=args.conc_runs,
        concurrency=args.concurrency,
        backends=backends,
        workloads=workloads,
        json_out=Path(args.json_out) if args.json_out else None,
        keep=bool(args.keep),
    )


# --- CPU accounting (as loadtests/bench.py) ----------------------------------------------------------------


class CpuWindow:
    """CPU seconds spent by each mesh process, this process and the machine between start and stop."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}
        self.wall = 0.0
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: process_cpu(proc.pid) for name, proc in self.mesh.procs.items()}
        sample["bench"] = process_cpu("self")
        sample["machine"] = machine_busy()
        return sample

    def start(self) -> None:
        self.before, self._t0 = self._sample(), time.monotonic()

    def stop(self) -> None:
        after, self.wall = self._sample(), time.monotonic() - self._t0
        spent = {k: v - self.before.get(k, 0.0) for k, v in after.items()}
        machine = spent.pop("machine")
        ours = sum(spent.values())
        spent["other"] = max(0.0, machine - ours)
        self.spent = spent


# --- figures -----------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), linear between closest ranks; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Stat:
    """Median and p95 in milliseconds."""

    p50_ms: float = 0.0
    p95_ms: float = 0.0

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stat:
        return cls(pct(seconds, 0.5) * 1000, pct(seconds, 0.95) * 1000)

    def text(self) -> str:
        return f"{self.p50_ms:7.1f} /{self.p95_ms:7.1f}"


@dataclass
class Scenario:
    """The figures of one measured scenario (engine or floor)."""

    backend: str
    mode: str  # sequential | concurrent
    kind: str  # engine | floor
    workload: str = ""  # engine: model | value (the kind of the five steps)
    runs: int = 0
    failed: int = 0
    concurrency: int = 1
    wall_s: float = 0.0
    runs_per_s: float = 0.0
    latency: Stat = field(default_factory=Stat)
    per_step: Stat = field(default_factory=Stat)  # run latency / 5
    step_call: Stat = field(default_factory=Stat)  # STEP_STARTED -> STEP_SUCCEEDED (event times)
    step_cycle: Stat = field(default_factory=Stat)  # STEP_SUCCEEDED(i-1) -> STEP_SUCCEEDED(i)
    phases: dict[str, Stat] = field(default_factory=dict)  # run overhead outside the steps
    cpu_ms_per_run: dict[str, float] = field(default_factory=dict)
    cores_busy: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`floor`, or the engine's workload (`model` / `value` steps)."""
        return self.workload or self.kind


# --- the mesh and the database -----------------------------------------------------------------------------


# --- driving runs through the REST edge --------------------------------------------------------------------


@dataclass
class RunSample:
    ok: bool
    latency_s: float = 0.0
    step_calls: list[float] = field(default_factory=list)
    step_cycles: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    error: str = ""


def _time(value: str) -> float:
    """An RFC 3339 `createTime` as POSIX seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def breakdown(sample: RunSample, sent_wall: float, got_wall: float, events: list[dict[str, Any]]) -> None:
    """Per-step and per-phase durations from the journal's event times (the worker's wall clock)."""
    first: dict[str, float] = {}
    succeeded: list[float] = []
    started: dict[str, float] = {}
    for e in events:
        kind, at = str(e.get("type", "")), _time(str(e["createTime"]))
        first.setdefault(kind, at)
        if kind == "RUN_EVENT_TYPE_STEP_STARTED":
            started.setdefault(str(e.get("stepId")), at)
        elif kind == "RUN_EVENT_TYPE_STEP_SUCCEEDED":
            sample.step_calls.append(at - started.get(str(e.get("stepId")), at))
            succeeded.append(at)
    run_started = first.get("RUN_EVENT_TYPE_RUN_STARTED")
    created = first.get("RUN_EVENT_TYPE_RUN_CREATED")
    done = first.get("RUN_EVENT_TYPE_RUN_SUCCEEDED")
    if run_started is not None and succeeded:
        previous = [run_started, *succeeded[:-1]]
        sample.step_cycles = [b - a for a, b in zip(previous, succeeded, strict=True)]
    if created is not None:
        sample.phases["POST -> RUN_CREATED"] = created - sent_wall
        if run_started is not None:
            sample.phases["RUN_CREATED -> RUN_STARTED"] = run_started - created
    if done is not None:
        if succeeded:
            sample.phases["last STEP_SUCCEEDED -> RUN_SUCCEEDED"] = done - succeeded[-1]
        sample.phases["RUN_SUCCEEDED -> client has it"] = got_wall - done


async def one_run(client: httpx.AsyncClient, workflow: str, index: int) -> RunSample:
    """Start a run and watch it to its final event; the sample of what it took."""
    sent_wall, t0 = time.time(), time.perf_counter()
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            reply = await client.post("/v1/runs", json={"workflow": workflow, "input": {"i": index}})
            if reply.status_code != 200:
                return RunSample(False, error=f"StartRun HTTP {reply.status_code}: {reply.text[:300]}")
            name = str(reply.json()["name"])
            events: list[dict[str, Any]] = []
            final = ""
            async with client.stream("GET", f"/v1/{name}:watch") as stream:
                if stream.status_code != 200:
                    body = (await stream.aread()).decode(errors="replace")
                    return RunSample(False, error=f"WatchRun HTTP {stream.status_code}: {body[:300]}")
                async for line in stream.aiter_lines():
                    if not line.strip():
                        continue
                    item = orjson.loads(line)
                    if "result" not in item:
                        return RunSample(False, error=f"WatchRun error: {line[:300]}")
                    event: dict[str, Any] = item["result"]
                    events.append(event)
                    if event.get("type") in FINAL:
                        final = str(event["type"])
                        break
            latency, got_wall = time.perf_counter() - t0, time.time()
    except TimeoutError:
        return RunSample(False, error=f"run did not finish within {RUN_TIMEOUT:.0f} s")
    except httpx.HTTPError as exc:
        return RunSample(False, error=f"{type(exc).__name__}: {exc}")
    if final != "RUN_EVENT_TYPE_RUN_SUCCEEDED":
        failed = [e.get("data") for e in events if "FAILED" in str(e.get("type"))]
        return RunSample(False, error=f"{name} ended {final or 'without a final event'}: {failed}"[:400])
    sample = RunSample(True, latency)
    breakdown(sample, sent_wall, got_wall, events)
    return sample


async def in_parallel(total: int, concurrency: int, job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """`total` jobs, at most `concurrency` in flight (each of `concurrency` lanes takes the next index)."""
    results: list[Any] = [None] * total
    counter = iter(range(total))

    async def lane() -> None:
        for index in counter:
            results[index] = await job(index)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, total))))
    return results


def edge_client(settings: Settings, concurrency: int) -> httpx.AsyncClient:
    token = dev_token(settings, ttl=3600)
    return httpx.AsyncClient(
        base_url=f"http://{settings.host}:{settings.http_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=RUN_TIMEOUT,
        limits=httpx.Limits(
            max_connections=2 * concurrency + 4, max_keepalive_connections=2 * concurrency + 4
        ),
    )


async def register_workflow(client: httpx.AsyncClient, workload: str) -> str:
    workflow_id = f"bench-{workload}-{uuid.uuid4().hex[:8]}"
    reply = await client.post("/v1/workflows", json={"source": workflow_yaml(workflow_id, workload)})
    if reply.status_code != 200:
        raise RuntimeError(f"POST /v1/workflows: HTTP {reply.status_code}: {reply.text[:500]}")
    return str(reply.json()["name"])


async def engine_scenario(
    client: httpx.AsyncClient,
    workflow: tuple[str, str],
    mesh: Mesh,
    backend: str,
    mode: str,
    total: int,
    conc: int,
) -> Scenario:
    workload, name = workflow
    result = Scenario(backend, mode, "engine", workload, runs=total, concurrency=conc)
    window = CpuWindow(mesh)
    window.start()
    samples: list[RunSample] = await in_parallel(total, conc, lambda i: one_run(client, name, i))
    window.stop()
    ok = [s for s in samples if s.ok]
    result.failed = total - len(ok)
    result.errors = [s.error for s in samples if not s.ok][:5]
    result.wall_s = window.wall
    result.runs_per_s = len(ok) / window.wall if window.wall else 0.0
    latencies = [s.latency_s for s in ok]
    result.latency = Stat.of(latencies)
    result.per_step = Stat.of([x / STEPS for x in latencies])
    result.step_call = Stat.of([x for s in ok for x in s.step_calls])
    result.step_cycle = Stat.of([x for s in ok for x in s.step_cycles])
    names = [name for s in ok for name in s.phases]
    for name in dict.fromkeys(names):
        result.phases[name] = Stat.of([s.phases[name] for s in ok if name in s.phases])
    account_cpu(result, window, len(ok))
    return result


def account_cpu(result: Scenario, window: CpuWindow, runs: int) -> None:
    spent = dict(window.spent)
    cpu = {name: spent.pop(name, 0.0) for name in (*CPU_COLUMNS, "bench", "other")}
    cpu["rest"] = sum(spent.values())
    cpu["total"] = sum(cpu.values())
    if runs:
        result.cpu_ms_per_run = {k: v * 1000 / runs for k, v in cpu.items()}
    if window.wall:
        result.cores_busy = {k: v / window.wall for k, v in cpu.items()}


# --- the floor ---------------------------------------------------------------------------------------------

floor_metadata = MetaData()
floor_steps = Table(
    "bench_floor_steps",
    floor_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("step_id", String(16), nullable=False),
    Column("data", JSON, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
)


async def floor_scenario(
    db: Database, mesh: Mesh, backend: str, mode: str, total: int, conc: int
) -> Scenario:
    """The bare loop: one INSERT + COMMIT per step, five steps per run, the same concurrency."""
    result = Scenario(backend, mode, "floor", runs=total, concurrency=conc)

    async def run(_index: int) -> float:
        run_id, t0 = uuid.uuid4().hex, time.perf_counter()
        for i in range(1, STEPS + 1):
            async with db.begin() as conn:
                await conn.execute(
                    floor_steps.insert().values(
                        run_id=run_id,
                        step_id=f"s{i}",
                        data={"output": {"text": "ok"}},
                        create_time=datetime.now().astimezone(),
                    )
                )
        return time.perf_counter() - t0

    window = CpuWindow(mesh)
    window.start()
    latencies: list[float] = await in_parallel(total, conc, run)
    window.stop()
    result.wall_s = window.wall
    result.runs_per_s = total / window.wall if window.wall else 0.0
    result.latency = Stat.of(latencies)
    result.per_step = Stat.of([x / STEPS for x in latencies])
    account_cpu(result, window, total)
    return result


def floor_database(data_dir: Path, database_url: str | None) -> Database:
    """The same engine settings the services get (`Database`), on the same database or disk."""
    if database_url:
        return Database(database_url, schema="bench_floor")
    return Database(f"sqlite+aiosqlite:///{(data_dir / 'bench-floor.db').resolve()}")


# --- one backend -------------------------------------------------------------------------------------------


async def measure_backend(
    opts: Options, settings: Settings, mesh: Mesh, backend: str, data_dir: Path, database_url: str | None
) -> list[Scenario]:
    results: list[Scenario] = []
    db = floor_database(data_dir, database_url)
    await db.create_all(floor_metadata)
    try:
        async with edge_client(settings, opts.concurrency) as client:
            workflows = [(w, await register_workflow(client, w)) for w in opts.workloads]
            for _, name in workflows:
                await warm_up(client, name)
            await in_parallel(20, 4, lambda _i: floor_warm(db))
            for mode, total, conc in (
                ("sequential", opts.seq_runs, 1),
                ("concurrent", opts.conc_runs, opts.concurrency),
            ):
                print(f"  {backend} {mode}: floor, {total} runs x {STEPS} commits ...", flush=True)
                results.append(await floor_scenario(db, mesh, backend, mode, total, conc))
                for workflow in workflows:
                    print(f"  {backend} {mode}: engine, {total} runs of {workflow[0]} steps via REST ...")
                    results.append(await engine_scenario(client, workflow, mesh, backend, mode, total, conc))
    finally:
        await db.dispose()
    return results


async def warm_up(client: httpx.AsyncClient, workflow: str) -> None:
    warm = await in_parallel(WARMUP_RUNS, 2, lambda i: one_run(client, workflow, i))
    bad = [w.error for w in warm if not w.ok]
    if bad:
        raise RuntimeError(f"warm-up runs failed: {bad[0]}")


async def floor_warm(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(
            floor_steps.insert().values(run_id="warm", step_id="s0", create_time=datetime.now().astimezone())
        )


def run_async(coro: Awaitable[list[Scenario]]) -> list[Scenario]:
    """Run on uvloop when installed (as the services do), else asyncio's default loop."""

    async def wrapper() -> list[Scenario]:
        return await coro

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapper())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(wrapper())


def bench_backend(opts: Options, backend: str, database_url: str | None) -> list[Scenario]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"af-runs-bench-{backend}-"))
    try:
        started = time.monotonic()
        print(f"{backend}: starting the mesh in {data_dir} ...", flush=True)
        with running_mesh(data_dir, REPO / "catalog", database_url) as (settings, mesh):
            print(f"{backend}: mesh up in {time.monotonic() - started:.1f}s", flush=True)
            results = run_async(measure_backend(opts, settings, mesh, backend, data_dir, database_url))
            dead = [name for name, proc in mesh.procs.items() if proc.poll() is not None]
            if dead:
                for r in results:
                    r.errors.append(f"mesh service(s) exited during the bench: {', '.join(dead)}")
                    r.failed = max(r.failed, 1)
        return results
    finally:
        if opts.keep:
            print(f"{backend}: logs kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# --- report ------------------------------------------------------------------------------------------------


def report(results: Sequence[Scenario], opts: Options, skipped: Mapping[str, str]) -> list[str]:
    lines = [
        f"AgentFlow durable runs: {STEPS}-step workflows via REST (model = chained local-model steps, "
        f"max_tokens 1, each a ModelService call; value = chained value steps, no call), "
        f"{os.cpu_count()} CPUs; sequential {opts.seq_runs} runs, concurrent {opts.conc_runs} runs at "
        f"{opts.concurrency} in flight",
        "",
        f"{'backend':<9} {'mode':<11} {'what':<7} {'runs/s':>8} {'ratio':>6}  {'run ms p50 / p95':>17}  "
        f"{'step ms (run/5)':>17}  {'step call (ev)':>17}  {'step cycle (ev)':>17}  failed",
    ]
    floors = {(r.backend, r.mode): r for r in results if r.kind == "floor"}
    for r in results:
        floor = floors.get((r.backend, r.mode))
        ratio = f"{r.runs_per_s / floor.runs_per_s:6.3f}" if r.kind == "engine" and floor else f"{'':>6}"
        events = (
            f"{r.step_call.text():>17}  {r.step_cycle.text():>17}"
            if r.kind == "engine"
            else f"{'':>17}  {'':>17}"
        )
        lines.append(
            f"{r.backend:<9} {r.mode:<11} {r.label:<7} {r.runs_per_s:>8.2f} {ratio}  {r.latency.text():>17}  "
            f"{r.per_step.text():>17}  {events}  {r.failed if r.kind == 'engine' else '-'}"
        )
    lines += [
        "",
        "ratio = engine runs/s / floor runs/s at the same backend and concurrency (aim: >= 0.5).",
        "  The floor is an in-process loop (no REST, gRPC or auth); on SQLite at 16 concurrent its 16 pooled",
        "  connections wait for the write lock in SQLite's busy handler (which sleeps), so it flatters.",
        "step ms (run/5): run latency (POST /v1/runs sent -> RUN_SUCCEEDED received on :watch) / 5, so it",
        "  includes StartRun, the final transition and the watch delivery spread over the steps.",
        "step call (ev): STEP_STARTED -> STEP_SUCCEEDED createTime: the start transaction + the step's call.",
        "step cycle (ev): STEP_SUCCEEDED(i-1) (or RUN_STARTED) -> STEP_SUCCEEDED(i): all a step costs.",
        "",
        "run phases outside the steps (ms p50 / p95, from event times and the client's clock):",
    ]
    for r in results:
        if r.kind == "engine":
            phases = "; ".join(f"{name} {stat.text().replace('  ', ' ')}" for name, stat in r.phases.items())
            lines.append(f"  {r.backend:<9} {r.mode:<11} {r.label:<6} {phases}")
    columns = (*CPU_COLUMNS, "rest", "bench", "other", "total")
    lines += [
        "",
        "CPU-ms per run (bench = this process: the HTTP client, or the floor loop; other = the rest of the "
        "machine, e.g. PostgreSQL):",
        f"{'backend':<9} {'mode':<11} {'what':<7} " + " ".join(f"{c:>13}" for c in columns),
    ]
    for r in results:
        cells = " ".join(f"{r.cpu_ms_per_run.get(c, 0.0):>13.2f}" for c in columns)
        lines.append(f"{r.backend:<9} {r.mode:<11} {r.label:<7} {cells}")
    lines += ["", "what dominates:"]
    for r in results:
        if r.kind == "engine":
            lines.append("  " + dominates(r, floors.get((r.backend, r.mode))))
    for backend, why in skipped.items():
        lines.append(f"\n{backend}: SKIPPED ({why})")
    return lines


def dominates(r: Scenario, floor: Scenario | None) -> str:
    """One line: which process spends the most CPU per run, and whether the machine is saturated."""
    cpu = {k: v for k, v in r.cpu_ms_per_run.items() if k not in ("total",)}
    top = sorted(cpu.items(), key=lambda kv: kv[1], reverse=True)[:3]
    busy = r.cores_busy.get("total", 0.0)
    cores = os.cpu_count() or 1
    top_text = ", ".join(f"{k} {v:.1f}" for k, v in top)
    floor_text = f"; the floor costs {floor.cpu_ms_per_run.get('total', 0.0):.1f}" if floor else ""
    hot = [f"{k} {v:.2f}" for k, v in r.cores_busy.items() if k in CPU_COLUMNS and v >= 0.85]
    bound = (
        f"CPU-bound ({busy:.2f} of {cores} cores busy)"
        if busy >= 0.85 * cores
        else f"not CPU-bound ({busy:.2f} of {cores} cores busy): latency (round trips, commits) bounds it"
    )
    saturated = f"; saturated event loop(s): {', '.join(hot)}" if hot else ""
    return (
        f"{r.backend} {r.mode} {r.label}: {r.cpu_ms_per_run.get('total', 0.0):.1f} CPU-ms per run "
        f"({r.cpu_ms_per_run.get('total', 0.0) / STEPS:.1f} per step), most in {top_text}{floor_text}; "
        f"{bound}{saturated}"
    )


# --- main --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", module="jwt")  # the dev secret is short on purpose
    results: list[Scenario] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    try:
        for backend in opts.backends:
            if backend == "sqlite":
                results += bench_backend(opts, backend, None)
                continue
            if not postgres_available():
                skipped[backend] = "PostgreSQL is not reachable on 127.0.0.1:5432"
                print(f"{backend}: SKIPPED, PostgreSQL is not reachable on 127.0.0.1:5432", flush=True)
                continue
            with postgres_database() as url:
                results += bench_backend(opts, backend, url)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n(bench took {time.monotonic() - started:.0f}s)\n")
    print("\n".join(report(results, opts, skipped)))
    if opts.json_out:
        payload = {"scenarios": [asdict(r) for r in results], "skipped": skipped}
        opts.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    failed = [r for r in results if r.failed]
    for r in failed:
        print(f"\nFAILED {r.backend} {r.mode}: {r.failed} run(s): {'; '.join(r.errors)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
