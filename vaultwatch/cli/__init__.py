"""The ``vaultwatch`` console script: one verb per module in this package.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily, so ``vaultwatch --help`` stays fast and a verb's heavy dependencies
load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from .. import __version__

__all__ = ["main", "VERBS"]

#: verb -> (module, one-line help). Only verbs that exist are listed.
VERBS: dict[str, tuple[str, str]] = {
    "demo": (
        "demo",
        "the embedded default: OpenBao, broker, pipeline, UI, traffic and attacks on one machine",
    ),
    "run": ("run", "the streaming service: consume the audit topic, detect, store, route alerts"),
    "ship": ("ship", "tail an audit file or listen as a socket audit device; produce to Kafka"),
    "replay": ("replay", "process recorded audit logs in event-time order; write every alert as JSON lines"),
    "serve": ("serve", "the analyst API and web UI"),
    "report": ("report", "render an audit review report (HTML and PDF) for a period"),
    "check": (
        "check",
        "pre-deployment checks through the Vault API: secrets, audit devices, least privilege",
    ),
    "exposure": ("exposure", "exposure scope of a secret path or a token, from the event archive"),
    "inspect": ("inspect", "parse audit logs and summarise events, identities and parse failures"),
    "quarantine": ("quarantine", "list, show, requeue or discard quarantined audit lines (encrypted)"),
    "config": ("config", "validate a configuration file and print the effective settings, secrets redacted"),
    "access-model": (
        "access_model",
        "propose a starting access model (roles, protected paths, rotation) from Vault and/or logs",
    ),
}


class _Command(Protocol):
    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(verb: str) -> _Command:
    module, _ = VERBS[verb]
    return cast(_Command, importlib.import_module(f"vaultwatch.cli.{module}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultwatch",
        description="Audit and anomaly detection for HashiCorp Vault and OpenBao audit logs.",
        epilog="Run `vaultwatch VERB --help` for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"vaultwatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for vaultwatch's own log lines on stderr (default: WARNING)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb, (_, short) in VERBS.items():
        # Parsers for a verb are built only when that verb is asked for (see main()).
        sub.add_parser(verb, help=short, add_help=False)
    return parser


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    cmd = _load(verb)
    p = argparse.ArgumentParser(
        prog=f"vaultwatch {verb}",
        description=getattr(cmd, "DESCRIPTION", cmd.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Split global options from the verb and its arguments.
    idx = next((i for i, a in enumerate(argv) if a in VERBS), None)
    if idx is None:
        parser.parse_args(argv)
        parser.print_help()
        return 2
    glob = parser.parse_args(argv[:idx])
    verb = argv[idx]
    logging.basicConfig(
        level=getattr(logging, glob.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    vargs = _verb_parser(verb).parse_args(argv[idx + 1 :])
    try:
        return int(_load(verb).run(vargs) or 0)
    except KeyboardInterrupt:
        return 130
