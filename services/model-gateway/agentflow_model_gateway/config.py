"""Model configuration of the gateway: the shared catalog format (`agentflow_runtime.model_catalog`)."""

from __future__ import annotations

from agentflow_runtime.model_catalog import (
    DEFAULT_MODELS,
    PROVIDERS,
    ConfigError,
    ModelConfig,
    load_models,
    parse_models,
)

__all__ = ["DEFAULT_MODELS", "PROVIDERS", "ConfigError", "ModelConfig", "load_models", "parse_models"]
