from __future__ import annotations

import sys
from pathlib import Path

import pytest
from agentflow_tool_sandbox.catalog import CatalogError, load_catalog, parse_tool
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.spec import ORIGIN_CATALOG

from .conftest import collect, stdout_of

REPO_CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "tools"

VALID = """
id: echo
description: Echoes.
input_schema:
  type: object
  properties: {text: {type: string}}
  required: [text]
process:
  command: ["{tool_dir}/bin/echo.sh", "--flag"]
  env: {MODE: fast}
limits: {wall_time_seconds: 2.5, cpu_seconds: 1, memory_bytes: 16777216, output_bytes: 100}
"""


def test_the_repository_catalog_loads() -> None:
    tools = {t.tool_id: t for t in load_catalog(REPO_CATALOG)}
    assert {"word-count", "ticker"} <= set(tools)
    word_count = tools["word-count"]
    assert word_count.origin == ORIGIN_CATALOG
    assert word_count.process.command == ("{python}", f"{REPO_CATALOG}/bin/word_count.py")
    assert word_count.input_schema["required"] == ["text"]


async def test_word_count_and_ticker_run(runner: ProcessRunner) -> None:
    tools = {t.tool_id: t for t in load_catalog(REPO_CATALOG)}
    word_count = tools["word-count"]
    _, result = await collect(runner.execute(word_count.process, word_count.limits, {"text": "two words"}))
    assert result.output == {"words": 2, "chars": 9}
    ticker = tools["ticker"]
    chunks, result = await collect(
        runner.execute(ticker.process, ticker.limits, {"count": 3, "interval": 0.01})
    )
    assert result.exit_code == 0
    assert stdout_of(chunks).decode().splitlines() == ["tick 1", "tick 2", "tick 3"]


def test_a_valid_file_parses_with_tool_dir_expanded(tmp_path: Path) -> None:
    (tmp_path / "echo.yaml").write_text(VALID)
    (tool,) = load_catalog(tmp_path)
    assert tool.tool_id == "echo"
    assert tool.process.command == (f"{tmp_path.resolve()}/bin/echo.sh", "--flag")
    assert tool.process.env == {"MODE": "fast"}
    assert tool.limits.wall_time_seconds == 2.5
    assert tool.limits.output_bytes == 100


def test_every_problem_is_listed(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        """
id: Bad_Id
surprise: 1
input_schema: {type: array, required: oops}
process: {command: "not a list", env: {"1BAD": x}}
limits: {wall_time_seconds: fast, cpu_seconds: -1, memory_bytes: 1.5}
"""
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    fields = {field for field, _ in caught.value.problems}
    assert fields == {
        "bad.yaml:surprise",
        "bad.yaml:description",
        "bad.yaml:process.command",
        "bad.yaml:process.env.1BAD",
        "bad.yaml:limits.wall_time_seconds",
        "bad.yaml:limits.cpu_seconds",
        "bad.yaml:limits.memory_bytes",
        "bad.yaml:id",
        "bad.yaml:input_schema.type",
        "bad.yaml:input_schema.required",
    }
    assert "bad.yaml:id" in str(caught.value)


def test_problems_of_all_files_and_duplicates_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text(VALID)
    (tmp_path / "c.yaml").write_text("[1, 2]")
    (tmp_path / "d.yaml").write_text("id: [unclosed")
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    fields = [field for field, _ in caught.value.problems]
    assert "b.yaml:id" in fields
    assert "c.yaml:" in fields
    assert "d.yaml:" in fields


def test_a_missing_directory_is_an_empty_catalog(tmp_path: Path) -> None:
    assert load_catalog(tmp_path / "absent") == []


def test_missing_process_is_reported() -> None:
    tool, problems = parse_tool({"id": "x", "description": "d"}, tool_dir=Path(sys.prefix))
    assert tool is None
    assert ("process", "required: a mapping with `command` and optional `env`") in problems
