"""`GlobalConfig`: documented defaults, ``TASKFLOW_*`` environment overrides, arguments beating
the environment, errors that name the setting and where its value came from, and `replace()`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

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
    "errors_maxlen": 10_000,
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


# -- heartbeat_s follows lease_s unless set --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "environ", "heartbeat"),
    [
        ({"lease_s": 2}, {}, 2 / 3),
        ({"lease_s": 90}, {}, 30.0),
        ({}, {"TASKFLOW_LEASE_S": "6"}, 2.0),
        ({"lease_s": 2, "heartbeat_s": 0.5}, {}, 0.5),
        ({"lease_s": 2}, {"TASKFLOW_HEARTBEAT_S": "1"}, 1.0),
    ],
)
def test_heartbeat_left_unset_is_a_third_of_the_lease(
    given: dict[str, float], environ: dict[str, str], heartbeat: float
) -> None:
    assert GlobalConfig(**given, environ=environ).heartbeat_s == pytest.approx(heartbeat)


def test_replace_keeps_an_unset_heartbeat_following_the_lease() -> None:
    assert GlobalConfig(environ={}).replace(lease_s=3).heartbeat_s == pytest.approx(1.0)
    pinned = GlobalConfig(lease_s=30, heartbeat_s=10, environ={})
    assert pinned.replace(lease_s=60).heartbeat_s == 10.0
    with pytest.raises(ConfigError, match=r"heartbeat_s=10\.0 must be smaller than lease_s=5\.0"):
        pinned.replace(lease_s=5)


# -- a misspelt TASKFLOW_* variable is reported --------------------------------------------------


TYPOS = [
    ("TASKFLOW_LEASE", "TASKFLOW_LEASE_S"),
    ("TASKFLOW_CONCURENCY", "TASKFLOW_CONCURRENCY"),
    ("TASKFLOW_DEFAULT_RETRY", "TASKFLOW_DEFAULT_RETRIES"),
    ("TASKFLOW_lease_s", "TASKFLOW_LEASE_S"),
]


@pytest.mark.parametrize(("variable", "meant"), TYPOS)
def test_a_misspelt_environment_variable_is_reported_with_the_setting_meant(
    variable: str, meant: str
) -> None:
    with pytest.warns(UserWarning, match=rf"{variable} is not a taskflow setting.*{meant}\?"):
        config = GlobalConfig(environ={variable: "5"})
    assert config == GlobalConfig(environ={})  # and ignored


def _taskflow_variables_used_in_the_repo() -> set[str]:
    root = Path(__file__).resolve().parents[2]
    names: set[str] = set()
    for folder in ("src", "tests", "scripts", "benchmarks", "docs", "examples", ".ci"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in {"", ".py", ".sh", ".md", ".toml", ".yml"}:
                text = path.read_text(encoding="utf-8", errors="replace")
                names.update(re.findall(r"\bTASKFLOW_[A-Z0-9_]*[A-Z0-9]\b", text))
    return names


def test_the_other_taskflow_variables_of_the_cli_tests_and_scripts_are_not_reported() -> None:
    # Every TASKFLOW_* name written anywhere in the repo, but the typos this file tests (and
    # the docs show): the CLI's, the tests', the scripts' and the benchmarks' own variables.
    used = _taskflow_variables_used_in_the_repo() - {typo for typo, _ in TYPOS}
    assert {"TASKFLOW_TEST_REDIS_URL", "TASKFLOW_LOG_LEVEL", "TASKFLOW_VENV"} <= used
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GlobalConfig(environ=dict.fromkeys(used - {"TASKFLOW_"}, "1") | SETTINGS_AS_TEXT)


SETTINGS_AS_TEXT = {f"TASKFLOW_{name.upper()}": str(value) for name, value in DEFAULTS.items()}
