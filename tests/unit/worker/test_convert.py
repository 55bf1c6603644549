"""Domain records -> protobuf: states, errors as google.rpc.Status with ErrorInfo, events."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from agentflow.runs.v1 import runs_pb2
from agentflow_runtime.errors import ERROR_DOMAIN, from_status
from agentflow_runtime.protojson import dict_from_struct, py_from_value
from agentflow_worker.convert import event_pb, run_pb, status, step_pb
from agentflow_worker.model import (
    Event,
    EventType,
    Plan,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    error_json,
)
from google.rpc import error_details_pb2

from .conftest import diamond

T0 = datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
T1 = datetime(2025, 3, 4, 5, 7, 0, tzinfo=UTC)


def record(state: RunState = RunState.FAILED) -> RunRecord:
    plan = diamond()
    return RunRecord(
        run_id="r1",
        tenant="acme",
        workflow=plan.workflow,
        workflow_version=3,
        plan_hash="abc123",
        plan=plan,
        state=state,
        input={"topic": "tides", "n": 2},
        labels={"team": "ops"},
        create_time=T0,
        output={"result": [1, "two"]},
        error=error_json("FAILED_PRECONDITION", "step b: tool exited 2", "TOOL_FAILED", step="b"),
        input_tokens=11,
        output_tokens=31,
        last_seq=9,
        end_time=T1,
        steps=[
            StepRecord("a", "tool", StepState.SUCCEEDED, {"text": "x"}, None, 1, T0, T1),
            StepRecord("b", "model", StepState.FAILED, None, error_json("ABORTED", "boom"), 2, T0, T1),
            StepRecord("c", "memory", StepState.SKIPPED),
            StepRecord("d", "tool", StepState.PENDING),
        ],
    )


def test_run_pb_fields() -> None:
    message = run_pb(record())
    assert message.name == "runs/r1"
    assert message.workflow == "workflows/test"
    assert message.workflow_version == 3
    assert message.plan_hash == "abc123"
    assert message.state == runs_pb2.RUN_STATE_FAILED
    assert dict_from_struct(message.input) == {"topic": "tides", "n": 2}
    assert py_from_value(message.output) == {"result": [1, "two"]}
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.total_tokens) == (
        11,
        31,
        42,
    )
    assert message.last_event_seq == 9
    assert dict(message.labels) == {"team": "ops"}
    assert message.create_time.ToDatetime(tzinfo=UTC) == T0
    assert message.end_time.ToDatetime(tzinfo=UTC) == T1

    assert message.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert message.error.message == "step b: tool exited 2"
    info = error_details_pb2.ErrorInfo()
    assert message.error.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == ("TOOL_FAILED", ERROR_DOMAIN, {"step": "b"})

    assert [(s.step_id, s.kind, s.state, s.attempts) for s in message.steps] == [
        ("a", "tool", runs_pb2.STEP_STATE_SUCCEEDED, 1),
        ("b", "model", runs_pb2.STEP_STATE_FAILED, 2),
        ("c", "memory", runs_pb2.STEP_STATE_SKIPPED, 0),
        ("d", "tool", runs_pb2.STEP_STATE_PENDING, 0),
    ]
    assert py_from_value(message.steps[0].output) == {"text": "x"}
    assert not message.steps[0].HasField("error")
    assert message.steps[1].error.code == grpc.StatusCode.ABORTED.value[0]
    assert from_status(message.steps[1].error).reason == "ABORTED"
    assert message.steps[0].start_time.ToDatetime(tzinfo=UTC) == T0
    assert not message.steps[2].HasField("start_time")

    assert not run_pb(record(), with_steps=False).steps


def test_run_pb_without_output_error_or_end() -> None:
    run = record(RunState.PENDING)
    run.output, run.error, run.end_time = None, None, None
    message = run_pb(run)
    assert message.state == runs_pb2.RUN_STATE_PENDING
    assert not message.HasField("output")
    assert not message.HasField("error")
    assert not message.HasField("end_time")


@pytest.mark.parametrize("state", list(RunState))
def test_every_run_state_has_a_proto_value(state: RunState) -> None:
    run = record(state)
    assert runs_pb2.RunState.Name(run_pb(run).state) == f"RUN_STATE_{state.value}"


@pytest.mark.parametrize("state", list(StepState))
def test_every_step_state_has_a_proto_value(state: StepState) -> None:
    assert runs_pb2.StepState.Name(step_pb(StepRecord("s", "tool", state)).state) == f"STEP_STATE_{state}"


@pytest.mark.parametrize("kind", list(EventType))
def test_event_pb_fields(kind: EventType) -> None:
    event = Event("r1", 7, kind, "b", RunState.RUNNING, {"output": {"text": "hi", "n": 3}}, T1)
    message = event_pb(event)
    assert message.seq == 7
    assert message.run == "runs/r1"
    assert runs_pb2.RunEventType.Name(message.type) == f"RUN_EVENT_TYPE_{kind.value}"
    assert message.step_id == "b"
    assert message.run_state == runs_pb2.RUN_STATE_RUNNING
    assert dict_from_struct(message.data) == {"output": {"text": "hi", "n": 3}}
    assert message.create_time.ToDatetime(tzinfo=UTC) == T1


def test_status_of_stored_errors() -> None:
    assert status(None) is None
    assert status({}) is None
    odd = status({"code": "NOT_A_CODE", "message": "?"})
    assert odd is not None and odd.code == grpc.StatusCode.UNKNOWN.value[0]
    bad = error_json("INVALID_ARGUMENT", "step a: bad", "TEMPLATE_ERROR")
    bad["violations"] = [{"field": "params.x", "description": "missing"}]
    message = status(bad)
    assert message is not None
    rebuilt = from_status(message)
    assert rebuilt.code is grpc.StatusCode.INVALID_ARGUMENT
    assert rebuilt.reason == "TEMPLATE_ERROR"
    assert rebuilt.violations == [("params.x", "missing")]


def test_plan_json_round_trip() -> None:
    plan = diamond()
    assert Plan.from_json(plan.to_json()) == plan
