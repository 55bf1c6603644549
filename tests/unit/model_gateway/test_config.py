from __future__ import annotations

from pathlib import Path

import pytest
from agentflow_model_gateway.config import DEFAULT_MODELS, ConfigError, ModelConfig, load_models, parse_models
from agentflow_model_gateway.providers.base import Usage
from agentflow_model_gateway.providers.local import LocalProvider
from agentflow_model_gateway.providers.openai import OpenAIProvider
from agentflow_model_gateway.routing import Router, alias_of
from agentflow_runtime.errors import InvalidArgument

CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "models"


def test_catalog_defines_the_local_model() -> None:
    models = load_models(CATALOG)
    assert [m.alias for m in models] == ["local", "local-script"]
    assert {m.provider for m in models} == {"local"}
    assert models[0].cost_usd(Usage(1000, 1000)) == 0
    assert models[1].script  # the agents' scripted model


def test_missing_catalog_falls_back_to_local(tmp_path: Path) -> None:
    assert load_models(tmp_path / "none") == list(DEFAULT_MODELS)


def test_openai_entry_and_pricing() -> None:
    (model,) = parse_models(
        """
models:
  - alias: gpt
    provider: openai
    provider_model: gpt-4o-mini
    base_url: https://api.example.com/v1/
    api_key_env: KEY
    input_price_per_mtok: 0.15
    output_price_per_mtok: 0.6
"""
    )
    assert model.base_url == "https://api.example.com/v1"
    assert model.cost_usd(Usage(1_000_000, 500_000)) == pytest.approx(0.45)


@pytest.mark.parametrize(
    "text",
    [
        "models: [{provider: local}]",
        "models: [{alias: x, provider: mystery}]",
        "models: [{alias: x, provider: openai}]",
        "models: [{alias: x, provider: local, colour: red}]",
        "models: [{alias: x, provider: local, input_price_per_mtok: cheap}]",
        "models: nope",
    ],
)
def test_bad_entries(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_models(text)


def test_duplicate_alias_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("models: [{alias: x, provider: local}]")
    (tmp_path / "b.yaml").write_text("models: [{alias: x, provider: local}]")
    with pytest.raises(ConfigError, match="twice"):
        load_models(tmp_path)


async def test_router_builds_one_provider_per_model() -> None:
    router = Router(
        [
            ModelConfig("local", "local", "local"),
            ModelConfig("gpt", "openai", "gpt-x", base_url="http://127.0.0.1:9"),
        ]
    )
    model, provider = router.resolve("models/local")
    assert model.alias == "local" and isinstance(provider, LocalProvider)
    assert router.resolve("local")[1] is provider
    assert isinstance(router.resolve("models/gpt")[1], OpenAIProvider)
    await router.aclose()
    assert alias_of("models/x") == "x"
    with pytest.raises(InvalidArgument):
        alias_of("models/")
