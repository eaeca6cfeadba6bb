"""`GlobalConfig`: documented defaults, ``TASKFLOW_*`` environment overrides, arguments beating
the environment, errors that name the setting and where its value came from, and `replace()`.
"""

from __future__ import annotations

import dataclasses

import pytest

from taskflow import ConfigError, GlobalConfig, QueueTasks

DEFAULTS = {
    "lease_s": 30.0,
    "heartbeat_s": 10.0,
    "result_ttl_s": 86_400.0,
    "default_retries": 0,
    "default_retry_backoff_s": 1.0,
    "max_retry_backoff_s": 600.0,
    "claim_batch": 100,
    "prefetch_wait_s": 0.05,
    "concurrency": 10,
    "thread_pool_size": 16,
    "shutdown_grace_s": 10.0,
    "idle_poll_s": 1.0,
    "unknown_task_window_s": 300.0,
    "unknown_task_retry_s": 5.0,
    "events_maxlen": 100_000,
    "cleanup_interval_s": 300.0,
    "default_queue": "default",
}


def test_defaults_without_environment() -> None:
    config = GlobalConfig(environ={})
    assert {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} == DEFAULTS


def test_every_setting_is_described_with_its_default_and_documented() -> None:
    described = GlobalConfig.describe()
    assert set(described) == set(DEFAULTS)
    doc = GlobalConfig.__doc__ or ""
    for name, (default, text) in described.items():
        assert default == DEFAULTS[name]
        assert text, f"{name} has no documentation"
        assert f"{name}:" in doc, f"{name} is missing from the GlobalConfig docstring"


def test_environment_overrides_defaults() -> None:
    env = {
        "TASKFLOW_LEASE_S": "5",
        "TASKFLOW_HEARTBEAT_S": "1.5",
        "TASKFLOW_DEFAULT_RETRIES": "3",
        "TASKFLOW_DEFAULT_QUEUE": "jobs",
    }
    config = GlobalConfig(environ=env)
    assert (config.lease_s, config.heartbeat_s) == (5.0, 1.5)
    assert config.default_retries == 3 and isinstance(config.default_retries, int)
    assert config.default_queue == "jobs"


def test_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_CONCURRENCY", "4")
    assert GlobalConfig().concurrency == 4
    assert QueueTasks(name="t").config.concurrency == 4


def test_explicit_argument_beats_the_environment() -> None:
    config = GlobalConfig(concurrency=7, environ={"TASKFLOW_CONCURRENCY": "4"})
    assert config.concurrency == 7


def test_bad_environment_value_names_the_variable_and_the_rule() -> None:
    with pytest.raises(ConfigError) as info:
        GlobalConfig(environ={"TASKFLOW_CLAIM_BATCH": "lots"})
    message = str(info.value)
    assert "claim_batch" in message
    assert "TASKFLOW_CLAIM_BATCH='lots'" in message
    assert "an integer >= 1" in message


def test_out_of_range_environment_value_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"lease_s=-1\.0 \(from TASKFLOW_LEASE_S\)"):
        GlobalConfig(environ={"TASKFLOW_LEASE_S": "-1"})


@pytest.mark.parametrize(
    ("setting", "value", "rule"),
    [
        ("lease_s", 0, "> 0"),
        ("concurrency", 0, "integer >= 1"),
        ("concurrency", 2.5, "integer >= 1"),
        ("default_retries", -1, "integer >= 0"),
        ("shutdown_grace_s", -0.1, ">= 0"),
        ("default_queue", "", "non-empty string"),
        ("result_ttl_s", "10", "seconds > 0"),
        ("claim_batch", True, "integer >= 1"),
    ],
)
def test_bad_argument_names_the_setting_its_source_and_the_rule(
    setting: str, value: object, rule: str
) -> None:
    with pytest.raises(ConfigError) as info:
        GlobalConfig(**{setting: value}, environ={})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"GlobalConfig.{setting}=" in message
    assert "(from argument)" in message
    assert rule in message


def test_config_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        GlobalConfig(lease_s=-1, environ={})


@pytest.mark.parametrize(("lease", "heartbeat"), [(10, 10), (10, 20)])
def test_heartbeat_must_be_shorter_than_the_lease(lease: float, heartbeat: float) -> None:
    with pytest.raises(ConfigError, match=r"heartbeat_s=.* must be smaller than lease_s"):
        GlobalConfig(lease_s=lease, heartbeat_s=heartbeat, environ={})


def test_replace_returns_a_validated_copy() -> None:
    base = GlobalConfig(environ={})
    changed = base.replace(concurrency=3, lease_s=60)
    assert (changed.concurrency, changed.lease_s) == (3, 60.0)
    assert base.concurrency == 10  # frozen original untouched
    with pytest.raises(ConfigError, match="heartbeat_s"):
        base.replace(heartbeat_s=30)
    with pytest.raises(ConfigError, match="no setting"):
        base.replace(nonsense=1)


def test_config_is_frozen() -> None:
    config = GlobalConfig(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lease_s = 1  # type: ignore[misc]
