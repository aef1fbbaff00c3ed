"""Settings: TOML + VAULTWATCH_* env, secret files, placeholder refusal, redaction, config check."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

import vaultwatch.settings as settings_module
from alerts.channels.config import ChannelsConfig
from alerts.route import RouterConfig
from vaultwatch import errors
from vaultwatch.api.auth import AuthConfig
from vaultwatch.cli import main
from vaultwatch.errors import ArchiveError, VaultwatchError
from vaultwatch.service import wiring
from vaultwatch.settings import REDACTED, ApiAuthConfig, ConfigError, KafkaConfig, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "vaultwatch.toml"
CANARY = "canary-51f0e2-settings-must-not-print"


def write(tmp_path: Path, text: str, name: str = "vw.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


def test_defaults_without_file_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process environment is read only when passed in.
    monkeypatch.setenv("VAULTWATCH_API__PORT", "9999")
    assert Settings().api.port == 8080
    s = load_settings(None, env={})
    assert (s.kafka.session_timeout_ms, s.kafka.heartbeat_interval_ms, s.kafka.max_poll_interval_ms) == (
        6000,
        1000,
        10000,
    )
    assert s.kafka.topic == "vault-audit"
    assert s.store.url == "sqlite:///./var/vaultwatch.db"
    assert (s.api.host, s.api.port) == ("127.0.0.1", 8080)
    assert s.vault is None and s.channels == {} and s.routes == {}
    # Configuration is passed in: the module holds no settings instance.
    assert not any(isinstance(v, Settings) for v in vars(settings_module).values())


def test_example_file_is_valid_and_its_tables_fit_the_alerts_package() -> None:
    s = load_settings(EXAMPLE, env={})
    assert s.vault is not None and s.vault.auth.method == "token_file"
    assert s.vault.auth.token_file == Path("/run/secrets/vault_token")  # a path, never read here
    channels = msgspec.convert(s.channels, ChannelsConfig)
    assert channels.receivers[0].name == "soc"
    router = RouterConfig.from_dict(s.routes)
    assert router.route.receiver == "soc"


def test_env_overrides_nested_and_ignores_unrelated_variables(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[kafka]\nbootstrap = "file-host:9092"\ntopic = "from-file"\n')
    env = {
        "VAULTWATCH_KAFKA__BOOTSTRAP": "k1:9092, k2:9093",
        "VAULTWATCH_KAFKA__SESSION_TIMEOUT_MS": "9000",
        "VAULTWATCH_API__PORT": "9191",
        "VAULTWATCH_LOGGING__LEVEL": "debug",
        "VAULTWATCH_VAULT__ADDR": "https://vault.example:8200/",
        "VAULTWATCH_VAULT__AUTH__METHOD": "kubernetes",
        "VAULTWATCH_VAULT__AUTH__ROLE": "vaultwatch",
        "VAULTWATCH_DETECT__RISK_THRESHOLD": "75",
        "VAULTWATCH_TEST_PG": "postgresql://elsewhere",  # not configuration
        "VAULTWATCH_BAO_BIN": "/usr/bin/bao",
        "OTHER": "x",
    }
    s = load_settings(cfg, env=env)
    assert s.kafka.servers() == ["k1:9092", "k2:9093"]
    assert s.kafka.topic == "from-file"
    assert s.kafka.session_timeout_ms == 9000 and s.api.port == 9191
    assert s.logging.level == "DEBUG"
    assert s.vault is not None and s.vault.addr == "https://vault.example:8200"
    assert s.vault.auth.mount_path == "kubernetes"
    assert s.detect.options() == {"risk_threshold": "75"}
    consumer = s.kafka.consumer_settings()
    assert consumer.group_id == "vaultwatch" and consumer.timings.session_timeout_ms == 9000


def test_config_file_named_by_env(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[api]\nport = 8181\n")
    assert load_settings(None, env={"VAULTWATCH_CONFIG": str(cfg)}).api.port == 8181


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kafka_password").write_text(CANARY + "\n")
    (tmp_path / "secret_id").write_text("approle-" + CANARY)
    (tmp_path / "slack_url").write_text("https://hooks.example/" + CANARY)
    cfg = write(
        tmp_path,
        """
[kafka]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-256"
sasl_username = "vw"
sasl_password_file = "secrets/kafka_password"
ssl_cafile = "ca.pem"
[vault]
[vault.auth]
method = "approle"
role_id = "role-1"
[[channels.receivers]]
name = "ops"
[[channels.receivers.slack]]
url_file = "slack_url"
[[channels.receivers.syslog]]
host = "127.0.0.1"
ca_file = "syslog-ca.pem"
""",
    )
    env = {"VAULTWATCH_VAULT__AUTH__SECRET_ID_FILE": str(tmp_path / "secret_id")}
    s = load_settings(cfg, env=env)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == CANARY  # one trailing newline stripped
    assert s.kafka.client_settings().sasl_password == CANARY
    assert s.vault is not None and s.vault.auth.secret_id is not None
    assert s.vault.auth.secret_id.get_secret_value() == "approle-" + CANARY
    receiver = s.channels["receivers"][0]
    # Free-form channel tables get a reference the channel resolves itself, not the value.
    assert receiver["slack"][0] == {"url": f"file:{tmp_path / 'slack_url'}"}
    assert receiver["syslog"][0]["ca_file"] == "syslog-ca.pem"  # a path, not a secret
    text = json.dumps(s.redacted()) + repr(s) + str(s)
    assert CANARY not in text


def test_env_file_variant_replaces_the_toml_value(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file-" + CANARY)
    cfg = write(tmp_path, '[kafka]\nsasl_password = "from-toml-value"\n')
    s = load_settings(cfg, env={"VAULTWATCH_KAFKA__SASL_PASSWORD_FILE": str(tmp_path / "pw")})
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "from-file-" + CANARY


@pytest.mark.parametrize(
    ("toml", "env", "key", "fragment"),
    [
        ('[kafka]\nsasl_password_file = "missing"\n', {}, "kafka.sasl_password_file", "no such file"),
        (
            '[kafka]\nsasl_password = "x1"\nsasl_password_file = "f"\n',
            {},
            "kafka.sasl_password_file",
            "not both",
        ),
        ("", {"VAULTWATCH_KAFKA__SASL_PASSWORD_FILE": "/nonexistent/pw"}, "kafka.sasl_password_file", ""),
        ('[kafka]\nsession_timeout_ms = "soon"\n', {}, "kafka.session_timeout_ms", "integer"),
        ("[kafka]\nheartbeat_interval_ms = 5000\n", {}, "kafka", "third of session_timeout_ms"),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', {}, "kafka", "sasl_mechanism, sasl_username"),
        ('[kafka]\nbootstrap = "no-port"\n', {}, "kafka.bootstrap", "host:port"),
        ('[store]\nurl = "mysql://db/vw"\n', {}, "store.url", "sqlite"),
        ("[api]\nport = 70000\n", {}, "api.port", "less than or equal"),
        ('[api]\nhots = "0.0.0.0"\n', {}, "api.hots", "unknown key"),
        ('[vault]\naddr = "http://v:8200"\n', {}, "vault.auth", "required"),
        ('[vault.auth]\nmethod = "approle"\nrole_id = "r"\n', {}, "vault.auth", "secret_id"),
        ('[vault.auth]\nmethod = "ldap"\n', {}, "vault.auth.method", "'token'"),
        ("[archive]\nretention_days = 0\n", {}, "archive.retention_days", "greater than or equal"),
        ("[frobnicate]\nx = 1\n", {}, "frobnicate", "unknown key"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str, fragment: str
) -> None:
    (tmp_path / "f").write_text("file-value")
    cfg = write(tmp_path, toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env=env)
    found = problems(exc)
    assert key in found, found
    assert fragment in found[key]
    assert key in str(exc.value) and str(cfg) in str(exc.value)


@pytest.mark.parametrize("value", ["changeme", "secret", "PASSWORD", "", "   ", "change-me"])
def test_placeholder_secrets_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, env={"VAULTWATCH_KAFKA__SASL_PASSWORD": value})
    assert "placeholder" in problems(exc)["kafka.sasl_password"]
    (tmp_path / "tok").write_text(value + "\n")  # from a file too
    with pytest.raises(ConfigError) as exc:
        load_settings(
            None,
            env={
                "VAULTWATCH_VAULT__AUTH__METHOD": "approle",
                "VAULTWATCH_VAULT__AUTH__ROLE_ID": "r1",
                "VAULTWATCH_VAULT__AUTH__SECRET_ID_FILE": str(tmp_path / "tok"),
            },
        )
    assert "placeholder" in problems(exc)["vault.auth.secret_id"]
    cfg = write(
        tmp_path, f'[[channels.receivers]]\nname = "x"\n[[channels.receivers.slack]]\nurl = "{value}"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={})
    assert "channels.receivers[0].slack[0].url" in str(exc.value)


def test_errors_never_quote_the_value(tmp_path: Path) -> None:
    cfgs = [
        f'[kafka]\nsession_timeout_ms = "{CANARY}"\n',
        f'[kafka]\nsasl_passwd = "{CANARY}"\n',
        f'[vault.auth]\nmethod = "{CANARY}"\n',
        f'[store]\nurl = "{CANARY}"\n',
        f'[api]\npublic_base_url = "ftp://u:{CANARY}@x"\n',
        f'[kafka]\nsasl_password = "{CANARY}"\nsasl_password_file = "x"\n',
        f'[kafka]\nsasl_password = ["{CANARY}"]\n',
        f'[kafka\nsasl_password = "{CANARY}"\n',
    ]
    for text in cfgs:
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, text), env={})
        assert CANARY not in str(exc.value) and CANARY not in repr(exc.value.problems), text
    with pytest.raises(ConfigError) as exc:
        load_settings(None, env={"VAULTWATCH_ROUTES": "{" + CANARY})
    assert CANARY not in str(exc.value) and "VAULTWATCH_ROUTES" in str(exc.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_settings(write(tmp_path, "[kafka]\nbootstrap = \n"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path, env={})


def canary_config(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        f"""
[kafka]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "PLAIN"
sasl_username = "vw"
sasl_password = "{CANARY}-kafka"
[store]
url = "postgresql+psycopg://vw:{CANARY}-db@db.internal:5432/vw"
[vault]
addr = "https://vault.internal:8200"
[vault.auth]
method = "token"
token = "{CANARY}-token"
[channels.receivers.0]
name = "literal-secrets-are-redacted-too"
webhook_url = "https://hooks.example/{CANARY}"
routing_key = "{CANARY}-pd"
signing_secrets = ["{CANARY}-whsec"]
reference = "env:SLACK_URL"
""",
    )


def test_redacted_hides_every_secret(tmp_path: Path) -> None:
    s = load_settings(canary_config(tmp_path), env={})
    red = s.redacted()
    assert CANARY not in json.dumps(red) and CANARY not in repr(s) and CANARY not in f"{s}"
    assert red["kafka"]["sasl_password"] == REDACTED
    assert red["vault"]["auth"]["token"] == REDACTED
    assert red["store"]["url"] == f"postgresql+psycopg://vw:{REDACTED}@db.internal:5432/vw"
    ch = red["channels"]["receivers"]["0"]
    assert ch["webhook_url"] == ch["routing_key"] == REDACTED and ch["signing_secrets"] == [REDACTED]
    assert ch["reference"] == "env:SLACK_URL"  # references are not secrets
    assert s.vault is not None and s.vault.auth.token is not None
    assert s.vault.auth.token.get_secret_value() == f"{CANARY}-token"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.upper().startswith("VAULTWATCH_"):
            monkeypatch.delenv(name)
    return monkeypatch


def strip_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_none(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [strip_none(v) for v in node]
    return node


def test_config_check_prints_redacted_toml_and_json(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = canary_config(tmp_path)
    clean_env.setenv("VAULTWATCH_API__PORT", "8099")
    assert main(["config", "check", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert CANARY not in out and CANARY not in err
    parsed = tomllib.loads(out)  # the TOML output is real TOML
    expected = strip_none(load_settings(cfg).redacted())
    assert parsed == expected and parsed["api"]["port"] == 8099
    assert main(["config", "check", str(cfg), "--json"]) == 0
    out, err = capsys.readouterr()
    assert CANARY not in out + err
    assert json.loads(out) == load_settings(cfg).redacted()


def test_config_check_reports_bad_files_with_exit_2(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(
        tmp_path, f'[kafka]\nsasl_password = "{CANARY}"\nsession_timeout_ms = "later"\n[api]\nprot = 1\n'
    )
    assert main(["config", "check", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and CANARY not in err
    assert "kafka.session_timeout_ms: Input should be a valid integer" in err
    assert "api.prot: unknown key" in err
    assert main(["config", "check", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    clean_env.setenv("VAULTWATCH_KAFKA__SASL_PASSWORD", "changeme")
    assert main(["config", "check"]) == 2
    assert "kafka.sasl_password: empty or placeholder secret refused" in capsys.readouterr().err
    clean_env.delenv("VAULTWATCH_KAFKA__SASL_PASSWORD")
    clean_env.setenv("VAULTWATCH_CONFIG", str(EXAMPLE))
    assert main(["config", "check"]) == 0
    assert "from " + str(EXAMPLE) in capsys.readouterr().out


def test_kafka_mapping_is_the_one_the_worker_uses() -> None:
    # One mapping from [kafka] to the clients' settings; blanks in bootstrap never reach a client.
    raw = {**KafkaConfig().model_dump(), "bootstrap": " k1:9092 , ,k2:9093 "}
    kafka = KafkaConfig.model_construct(**raw)
    assert kafka.servers() == ["k1:9092", "k2:9093"]
    assert kafka.client_settings().bootstrap == ["k1:9092", "k2:9093"]
    s = load_settings(None, env={"VAULTWATCH_KAFKA__BOOTSTRAP": " k1:9092 , k2:9093"})
    assert s.kafka.client_settings().bootstrap == ["k1:9092", "k2:9093"]
    assert not hasattr(wiring, "kafka_settings")  # the wiring keeps no copy of its own


def test_api_auth_comes_from_the_one_settings(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[api.auth]\nusers_file = "users.toml"\nrate_burst = 3\nlogin_burst = 4\n')
    env = {
        "JWT_KEY_FILE": "/run/secrets/jwt_private_key",
        "API_KEYS_FILE": "/run/secrets/api_keys",
        "VAULTWATCH_API_RATE_BURST": "7",
        "VAULTWATCH_API_TOKEN_TTL": "120",
        "VAULTWATCH_API_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
        "VAULTWATCH_API_COOKIE_SECURE": "false",
        "VAULTWATCH_API__AUTH__LOGIN_BURST": "5",
    }
    auth = AuthConfig.from_settings(load_settings(cfg, env=env))
    assert auth.jwt_key_file == Path("/run/secrets/jwt_private_key")
    assert auth.api_keys_file == Path("/run/secrets/api_keys")
    assert auth.users_file == Path("users.toml")
    # The environment wins over the file; the nested form wins over the historical names.
    assert (auth.rate_burst, auth.token_ttl, auth.cookie_secure, auth.login_burst) == (7, 120.0, False, 5)
    assert auth.trusted_proxies == ("10.0.0.0/8", "192.168.1.1")
    assert AuthConfig.from_settings(Settings()) == AuthConfig()
    bad_values = {
        "VAULTWATCH_API_RATE_BURST": "many",
        "VAULTWATCH_API_TRUSTED_PROXIES": "10.0.0.0/99",
        "VAULTWATCH_API_TOKEN_TTL": "-1",
        "VAULTWATCH_API_SSO_DEFAULT_ROLE": "root",
    }
    for name, value in bad_values.items():
        with pytest.raises(ConfigError) as err:
            load_settings(None, env={name: value})
        field = name.removeprefix("VAULTWATCH_API_").lower()
        assert [k for k, _ in err.value.problems] == [f"api.auth.{field}"]
        assert value not in str(err.value)


def test_auth_failure_limits_are_configurable(tmp_path: Path) -> None:
    """The refused-credential rate limit (API keys, JWTs, sessions) is set like every other limit."""
    cfg = write(tmp_path, "[api.auth]\nauth_failure_per_second = 0.5\nauth_failure_burst = 3\n")
    auth = AuthConfig.from_settings(load_settings(cfg, env={}))
    assert (auth.auth_failure_per_second, auth.auth_failure_burst) == (0.5, 3)
    env = {"VAULTWATCH_API_AUTH_FAILURE_BURST": "9", "VAULTWATCH_API__AUTH__AUTH_FAILURE_PER_SECOND": "2"}
    auth = AuthConfig.from_settings(load_settings(cfg, env=env))
    assert (auth.auth_failure_per_second, auth.auth_failure_burst) == (2.0, 9)
    for name, value in {
        "VAULTWATCH_API_AUTH_FAILURE_BURST": "0",
        "VAULTWATCH_API_AUTH_FAILURE_PER_SECOND": "-1",
    }.items():
        with pytest.raises(ConfigError) as err:
            load_settings(None, env={name: value})
        assert [k for k, _ in err.value.problems] == [
            f"api.auth.{name.removeprefix('VAULTWATCH_API_').lower()}"
        ]


def test_every_api_limit_has_a_setting() -> None:
    """No AuthConfig field is reachable only from code: each one is an ``[api.auth]`` key."""
    assert {f.name for f in dataclasses.fields(AuthConfig)} == set(ApiAuthConfig.model_fields)


def test_shell_errors_share_one_root() -> None:
    assert issubclass(ConfigError, VaultwatchError)
    assert issubclass(ArchiveError, VaultwatchError)
    assert settings_module.ConfigError is errors.ConfigError
    for name in errors.__all__:
        assert isinstance(getattr(errors, name), type)
