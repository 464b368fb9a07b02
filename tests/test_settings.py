"""Settings: config files (YAML, TOML), the environment, and errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings


def test_settings_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.port == 8080
    assert settings.auth.mode == "jwt"
    # Every system folder of mappings/ (the tests run from the repository root).
    assert [s.path.name for s in settings.systems] == [
        "billing",
        "hospital",
        "lab",
        "pharmacy",
        "scheduling",
    ]


def test_settings_from_toml_resolve_system_paths_beside_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'port = 9090\npaging_key = "k"\n[limits]\nmax_count = 50\n'
        '[[systems]]\npath = "maps/ehr"\nendpoint = "http://ehr.test/ehr"\n'
    )
    settings = load_settings(config)
    assert settings.port == 9090
    assert settings.limits.max_count == 50
    assert settings.systems[0].path == (tmp_path / "maps" / "ehr").resolve()
    assert settings.systems[0].endpoint == "http://ehr.test/ehr"


def test_settings_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("port: 9090\nlimits:\n  max_count: 50\n")
    monkeypatch.setenv("BRIDGE_PORT", "9191")
    monkeypatch.setenv("BRIDGE_LIMITS__MAX_COUNT", "70")
    settings = load_settings(config)
    assert settings.port == 9191
    assert settings.limits.max_count == 70


def test_settings_command_line_wins_over_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "9191")
    assert load_settings(port=7000).port == 7000


def test_settings_bad_value_names_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("host: 127.0.0.1\nlimits:\n  max_count: lots\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (3, 3)
    assert problem.file.endswith("gateway.yaml")
    assert problem.message.startswith("limits.max_count: Input should be a valid integer")


def test_settings_unknown_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("prot: 8080\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "prot" in str(caught.value)
    assert str(caught.value).endswith("prot: Extra inputs are not permitted")


def test_the_gateway_config_may_use_yaml_anchors(tmp_path: Path) -> None:
    # Mapping files refuse anchors (bridge/mapping/loader.py); the operator's own config
    # may share a value through one.
    config = tmp_path / "gateway.yaml"
    config.write_text("trusted_proxies: [&proxy 10.0.0.1, *proxy]\nhost: 127.0.0.1\n")
    assert [str(p) for p in load_settings(config).trusted_proxies] == ["10.0.0.1"] * 2
    config.write_text("limits: &limits {max_count: 20}\nhost: 127.0.0.1\n")
    assert load_settings(config).limits.max_count == 20


def test_the_audit_group_commit_is_a_few_milliseconds_at_most(tmp_path: Path) -> None:
    assert load_settings().audit.group_commit == 0.003
    config = tmp_path / "gateway.yaml"
    config.write_text("audit:\n  group_commit: 0\n")
    assert load_settings(config).audit.group_commit == 0  # every request commits alone
    config.write_text("audit:\n  group_commit: 1\n")  # a second: answers would crawl
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert problem.message.startswith("audit.group_commit: Input should be less than or equal")


def test_trusted_proxies_are_addresses_or_networks(tmp_path: Path) -> None:
    assert load_settings().trusted_proxies == []  # by default no header is believed
    config = tmp_path / "gateway.yaml"
    config.write_text("trusted_proxies: [10.0.0.7, 10.1.0.0/16, '::1']\n")
    assert load_settings(config).trusted_proxies == ["10.0.0.7", "10.1.0.0/16", "::1"]
    config.write_text("trusted_proxies:\n  - 10.0.0.7\n  - ingress.local\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (problem,) = caught.value.problems
    assert problem.file.endswith("gateway.yaml")
    assert "trusted_proxies" in problem.message
    assert "'ingress.local' is not an IP address or network; write e.g. 10.0.0.7" in (
        problem.message
    )
