from __future__ import annotations

from agentflow_runtime.redact import REDACTED, is_secret_key, redact


def test_redacts_secret_keys_recursively() -> None:
    data = {
        "user": "alice",
        "Password": "hunter2",
        "headers": {"Authorization": "Bearer x", "accept": "json"},
        "items": [{"api_key": "k1"}, {"apiKey": "k2"}, {"X-Api-Key": "k3"}, "plain"],
        "db": {"client_secret": {"deep": 1}, "access_token": "t"},
        "prompt_tokens": 12,
    }
    out = redact(data)
    assert out == {
        "user": "alice",
        "Password": REDACTED,
        "headers": {"Authorization": REDACTED, "accept": "json"},
        "items": [{"api_key": REDACTED}, {"apiKey": REDACTED}, {"X-Api-Key": REDACTED}, "plain"],
        "db": {"client_secret": REDACTED, "access_token": REDACTED},
        "prompt_tokens": 12,
    }
    assert data["Password"] == "hunter2"


def test_extra_keys_and_words() -> None:
    assert is_secret_key("email", ["EMAIL"])
    assert is_secret_key("refreshToken")
    assert not is_secret_key("tokenizer_name")
    assert not is_secret_key("keyboard")
    assert redact({"ssn": "1", "n": 2}, extra_keys=["ssn"]) == {"ssn": REDACTED, "n": 2}
