"""The model catalog: aliases from `catalog/models/*.yaml`, each naming a provider and its prices.

Shared: the model-gateway serves these models, and the planner prices plans with the same entries.

A file holds `models: [...]`, each entry::

    alias: local                 # the name clients use: models/local
    provider: local              # local | openai
    provider_model: local-draft  # the provider's own model id (default: the alias)
    input_price_per_mtok: 0      # US dollars per million input tokens
    output_price_per_mtok: 0     # US dollars per million output tokens
    base_url: https://api.openai.com/v1   # openai: any OpenAI-compatible endpoint
    api_key_env: OPENAI_API_KEY           # openai: environment variable holding the key (optional)
    timeout_seconds: 60                   # openai: per-request timeout
    embedding_dim: 256                    # local: embedding size
    script: [...]                         # local: scripted replies (model-gateway `providers/script.py`)

Without any file the gateway serves the built-in `local` model, so the demo needs no configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from agentflow_runtime.embedding import DEFAULT_DIM

__all__ = [
    "DEFAULT_MODELS",
    "PROVIDERS",
    "ConfigError",
    "ModelConfig",
    "TokenCounts",
    "load_models",
    "parse_models",
]

PROVIDERS = ("local", "openai")


class TokenCounts(Protocol):
    """Anything that counts tokens in and out (a usage record, an estimate)."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...


class ConfigError(ValueError):
    """A model catalog that cannot be used."""


@dataclass(frozen=True)
class ModelConfig:
    """One model alias and how to reach it."""

    alias: str
    provider: str
    provider_model: str
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    base_url: str = ""
    api_key_env: str = ""
    timeout_seconds: float = 60.0
    embedding_dim: int = DEFAULT_DIM
    script: tuple[Any, ...] = ()
    """Local models only: rules that choose replies (checked by the model-gateway, which runs them)."""

    def cost_usd(self, usage: TokenCounts) -> float:
        """What `usage` costs at this model's prices."""
        return (
            usage.input_tokens * self.input_price_per_mtok + usage.output_tokens * self.output_price_per_mtok
        ) / 1_000_000


DEFAULT_MODELS = (ModelConfig(alias="local", provider="local", provider_model="local"),)


def _entry(raw: Any, where: str) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each model must be a mapping")
    known = set(ModelConfig.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    alias, provider = raw.get("alias"), raw.get("provider")
    if not isinstance(alias, str) or not alias:
        raise ConfigError(f"{where}: `alias` is required")
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}: `provider` must be one of {', '.join(PROVIDERS)}")
    if provider == "openai" and not raw.get("base_url"):
        raise ConfigError(f"{where}: an openai model needs `base_url`")
    script = raw.get("script") or []
    if not isinstance(script, list) or (script and provider != "local"):
        raise ConfigError(f"{where}: `script` is a list of rules, for a local model only")
    try:
        return ModelConfig(
            alias=alias,
            provider=str(provider),
            provider_model=str(raw.get("provider_model") or alias),
            input_price_per_mtok=float(raw.get("input_price_per_mtok", 0)),
            output_price_per_mtok=float(raw.get("output_price_per_mtok", 0)),
            base_url=str(raw.get("base_url", "")).rstrip("/"),
            api_key_env=str(raw.get("api_key_env", "")),
            timeout_seconds=float(raw.get("timeout_seconds", 60)),
            embedding_dim=int(raw.get("embedding_dim", DEFAULT_DIM)),
            script=tuple(script),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_models(text: str, where: str = "models") -> list[ModelConfig]:
    """The models of one YAML document (`models: [...]`; an empty document has none)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise ConfigError(f"{where}: expected `models: [...]`")
    return [_entry(raw, f"{where}: models[{i}]") for i, raw in enumerate(data.get("models", []))]


def load_models(directory: Path) -> list[ModelConfig]:
    """Every model of `directory/*.yaml` (sorted by file name), or the built-in defaults when there are none.

    A repeated alias is an error.
    """
    models: list[ModelConfig] = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            models.extend(parse_models(path.read_text(encoding="utf-8"), str(path)))
    _check_unique(models)
    return models or list(DEFAULT_MODELS)


def _check_unique(models: Iterable[ModelConfig]) -> None:
    seen: set[str] = set()
    for model in models:
        if model.alias in seen:
            raise ConfigError(f"model alias {model.alias!r} is defined twice")
        seen.add(model.alias)
