"""Settings: environment over the AF_CONFIG YAML file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentflow_runtime.settings import SERVICES, Settings


def test_defaults_give_every_service_its_own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AF_CONFIG", "AF_BASE_PORT", "AF_HTTP_PORT", "AF_PORTS"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    ports = [settings.port(s) for s in SERVICES]
    assert ports == list(range(50050, 50050 + len(SERVICES)))
    assert settings.metrics_port("worker") == settings.port("worker") + 1000
    assert settings.address("planner") == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.certs == Path(".agentflow/certs")


def test_env_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agentflow.yaml"
    config.write_text("base_port: 41000\nhttp_port: 9999\nlog_level: DEBUG\n")
    monkeypatch.setenv("AF_CONFIG", str(config))
    monkeypatch.setenv("AF_HTTP_PORT", "8181")
    settings = Settings()
    assert settings.base_port == 41000  # from the file
    assert settings.http_port == 8181  # env wins over the file
    assert settings.log_level == "DEBUG"
    assert settings.drain_seconds == 5.0  # default


def test_explicit_port_map_overrides_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_PORTS", '{"worker": 6000}')
    settings = Settings()
    assert settings.port("worker") == 6000
    assert settings.port("planner") == settings.base_port + SERVICES.index("planner")


def test_unknown_service_is_an_error() -> None:
    with pytest.raises(KeyError):
        Settings().port("nope")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.host = "0.0.0.0"  # type: ignore[misc]
    assert settings.with_overrides(host="::1").host == "::1"
