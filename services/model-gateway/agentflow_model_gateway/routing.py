"""Routes a model name (`models/{alias}` or the bare alias) to its configuration and provider."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentflow_runtime.errors import InvalidArgument, NotFound

from .config import ConfigError, ModelConfig
from .providers.base import Provider
from .providers.local import LocalProvider
from .providers.openai import OpenAIProvider
from .providers.script import ScriptError, parse_script

__all__ = ["Router", "alias_of", "check_scripts", "provider_for"]

_PREFIX = "models/"


def provider_for(model: ModelConfig) -> Provider:
    """A new provider client for a configured model."""
    if model.provider == "openai":
        return OpenAIProvider(
            model.base_url, api_key_env=model.api_key_env, timeout_seconds=model.timeout_seconds
        )
    script = parse_script(model.script, f"models/{model.alias}: script") if model.script else None
    return LocalProvider(dim=model.embedding_dim, script=script)


def check_scripts(models: Sequence[ModelConfig]) -> None:
    """Parse every local model's script now (ConfigError for the first bad one), not at its first call."""
    for model in models:
        if model.script:
            try:
                parse_script(model.script, f"models/{model.alias}: script")
            except ScriptError as exc:
                raise ConfigError(str(exc)) from exc


def alias_of(name: str) -> str:
    """`local` for `models/local` or `local`; InvalidArgument for an empty name."""
    alias = name.removeprefix(_PREFIX)
    if not alias or "/" in alias:
        raise InvalidArgument(
            f"{name!r} is not a model name", violations=[("model", "must be models/{model}")]
        )
    return alias


class Router:
    """Holds the configured models and one provider client per model, created on first use."""

    def __init__(
        self, models: Sequence[ModelConfig], factory: Callable[[ModelConfig], Provider] = provider_for
    ) -> None:
        self._models = {model.alias: model for model in models}
        self._factory = factory
        self._providers: dict[str, Provider] = {}

    @property
    def models(self) -> list[ModelConfig]:
        return list(self._models.values())

    def resolve(self, name: str) -> tuple[ModelConfig, Provider]:
        """The model and its provider; NotFound for an unknown alias."""
        alias = alias_of(name)
        model = self._models.get(alias)
        if model is None:
            known = ", ".join(sorted(self._models))
            raise NotFound(f"model {alias!r} is not configured (known: {known})", metadata={"model": alias})
        if alias not in self._providers:
            self._providers[alias] = self._factory(model)
        return model, self._providers[alias]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
