"""``ship`` and ``quarantine kafka://`` build their Kafka clients through the one mapping.

Issue 12 wants one mapping from configuration to kafka-python settings:
:meth:`vaultwatch.settings.KafkaConfig.client_settings`, which ``vaultwatch run`` uses. Before, ``ship``
built ``KafkaSettings`` from its flags (no TLS, no SASL) and ``quarantine`` opened a bare
``KafkaConsumer`` on ``servers.split(",")`` (blanks kept). Here, for one TLS + SASL configuration,
both verbs must hand kafka-python the settings ``run``'s mapping gives. No broker is needed: the
clients are captured where they would be created.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ingest.kafka_config import consumer_config
from vaultwatch.cli import build_parser, main
from vaultwatch.cli import quarantine as quarantine_cli
from vaultwatch.cli import ship as ship_cli
from vaultwatch.settings import KafkaConfig, load_settings

PASSWORD = "canary-kafka-pw-6d1f03b2"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("VAULTWATCH_CONFIG", "VAULTWATCH_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "ca.pem").write_text("not read by these tests\n")
    cfg = tmp_path / "vw.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap = " k1:9093 , k2:9093 "
client_id = "vw-worker"
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "vaultwatch"
sasl_password_file = "pw"
ssl_cafile = "{tmp_path / "ca.pem"}"
"""
    )
    return cfg


def _ship_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ship_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_verbs_are_registered() -> None:
    # The modules tested below are the ones `vaultwatch ship|quarantine` run.
    parser = build_parser()
    assert parser.parse_args(["ship"]).verb == "ship"
    assert parser.parse_args(["quarantine"]).verb == "quarantine"


def test_ship_takes_tls_and_sasl_from_the_configuration(config: Path) -> None:
    run = load_settings(config, env={}).kafka.client_settings()
    got = ship_cli.kafka_settings(_ship_args("--stdin", "--config", str(config)))
    # Run's mapping, the client id aside (the shipper names itself, the worker has [kafka] client_id).
    assert got == replace(run, client_id="vaultwatch-ship")
    common = got.common()
    assert common["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert common["security_protocol"] == "SASL_SSL"
    assert common["sasl_mechanism"] == "SCRAM-SHA-512"
    assert common["sasl_plain_username"] == "vaultwatch"
    assert common["sasl_plain_password"] == PASSWORD
    assert common["ssl_cafile"] == str(config.parent / "ca.pem")


def test_ship_flags_replace_brokers_and_client_id_parsed_as_run_parses_them(config: Path) -> None:
    args = _ship_args("--stdin", "--config", str(config), "--bootstrap", " a:1 ,b:2,", "--client-id", "x")
    got = ship_cli.kafka_settings(args)
    assert got.common()["bootstrap_servers"] == ["a:1", "b:2"]
    assert got.client_id == "x"
    assert got.sasl_password == PASSWORD  # the rest of [kafka] still applies
    # Without a configuration: the defaults of the one model, not a second set.
    plain = ship_cli.kafka_settings(_ship_args("--stdin", "--bootstrap", "a:1"))
    assert plain == replace(KafkaConfig(bootstrap="a:1").client_settings(), client_id="vaultwatch-ship")


def test_ship_run_produces_with_those_settings(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def connect(kafka: Any, settings: Any, backoff: Any, stop: Any) -> None:
        seen.append(kafka)
        return None  # as if stopped before a broker answered

    monkeypatch.setattr(ship_cli, "_connect", connect)
    log = tmp_path / "audit.log"
    log.write_text("")
    assert main(["ship", "--file", str(log), "--config", str(config)]) == 1
    assert seen == [
        replace(load_settings(config, env={}).kafka.client_settings(), client_id="vaultwatch-ship")
    ]


def test_ship_refuses_a_bad_broker_list_naming_the_key(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    assert main(["ship", "--file", str(log), "--config", str(config), "--bootstrap", "nohost"]) == 2
    assert "kafka.bootstrap" in caplog.text
    assert PASSWORD not in caplog.text


class _Consumer:
    def __init__(self, **cfg: Any) -> None:
        _Kafka.configs.append(cfg)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set()  # no such topic: the command stops there

    def close(self) -> None:
        pass


class _Kafka:
    configs: list[dict[str, Any]] = []
    KafkaConsumer = _Consumer


def test_quarantine_reads_the_dlq_with_the_same_mapping(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _Kafka.configs = []
    monkeypatch.setattr(quarantine_cli, "import_kafka", lambda: _Kafka)
    url = "kafka:// q1:9094 , q2:9094/vault-audit.dlq"
    assert main(["quarantine", "list", url, "--config", str(config)]) == 2
    assert "no topic 'vault-audit.dlq'" in capsys.readouterr().err
    (cfg,) = _Kafka.configs
    kafka = load_settings(config, env={}).kafka
    run_side = consumer_config(kafka.client_settings(), replace(kafka.consumer_settings(), group_id=None))
    run_side["bootstrap_servers"] = ["q1:9094", "q2:9094"]  # the URL's brokers, blanks dropped
    assert {k: cfg[k] for k in run_side} == run_side
    assert cfg["group_id"] is None and cfg["enable_auto_commit"] is False
    assert cfg["auto_offset_reset"] == "earliest"
    assert cfg["sasl_plain_password"] == PASSWORD and cfg["security_protocol"] == "SASL_SSL"
    assert cfg == quarantine_cli.dlq_consumer_config(
        quarantine_cli.dlq_kafka_config(" q1:9094 , q2:9094", str(config))
    )


def test_quarantine_without_a_configuration_uses_the_model_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULTWATCH_CONFIG", raising=False)
    _Kafka.configs = []
    monkeypatch.setattr(quarantine_cli, "import_kafka", lambda: _Kafka)
    with pytest.raises(Exception, match="no topic"):
        quarantine_cli.read_dlq(["127.0.0.1:9092"], "t.dlq")  # the form bench/soak.py uses
    (cfg,) = _Kafka.configs
    assert cfg["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert cfg["security_protocol"] == "PLAINTEXT" and "sasl_plain_password" not in cfg


def test_quarantine_refuses_a_bad_broker_list(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quarantine", "list", "kafka://nohost/t.dlq", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "kafka.bootstrap" in err and PASSWORD not in err


def test_the_shipper_loads_no_detection() -> None:
    """``vaultwatch ship`` runs beside Vault: reading the settings must not load the engine,
    scikit-learn or pandas (about 190 MB)."""
    import subprocess
    import sys

    code = (
        "import sys, vaultwatch.cli.ship, vaultwatch.settings as s; s.load_settings(None, env={}); "
        "print(sorted(m for m in ('sklearn', 'pandas', 'detect.engine') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
