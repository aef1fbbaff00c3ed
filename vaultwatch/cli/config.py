"""``vaultwatch config check``: validate a configuration and print the effective settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..settings import CONFIG_ENV, ConfigError, load_settings

HELP = "validate a configuration file and print the effective settings, secrets redacted"
DESCRIPTION = f"""\
Validate a configuration (TOML file plus VAULTWATCH_* environment overrides, nested with `__`)
and print the effective settings with every secret shown as **********. Exit status is 0 when
the configuration is valid and 2 otherwise; errors name the key and what is wrong with it,
never a configured value.

Without FILE, ${CONFIG_ENV} names the file; with neither, defaults and environment apply.

examples:
  vaultwatch config check /etc/vaultwatch/vaultwatch.toml
  VAULTWATCH_KAFKA__BOOTSTRAP=kafka:9092 vaultwatch config check vaultwatch.toml --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate and print the effective configuration")
    check.add_argument("file", nargs="?", metavar="FILE", help=f"TOML file (default: ${CONFIG_ENV})")
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def run(args: argparse.Namespace) -> int:
    """Validate; print the redacted settings on stdout (0) or the problems on stderr (2)."""
    try:
        settings = load_settings(args.file, os.environ)
    except ConfigError as exc:
        print(f"vaultwatch config check: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    data = settings.redacted()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False))  # noqa: T201 - CLI output
    else:
        origin = args.file or os.environ.get(CONFIG_ENV) or "defaults and environment"
        print(f"# effective configuration from {origin}; secrets redacted")  # noqa: T201
        print(to_toml(data), end="")  # noqa: T201 - CLI output
    return 0


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None)
        return "{" + inner + "}" if inner else "{}"
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested plain data as TOML (unset values become comments)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, dict) or _is_table_list(v):
            tables.append((k, v))
        elif v is None:
            lines.append(f"# {_key(k)} = (unset)")
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}{_key(k)}"
        if isinstance(v, dict):
            body = to_toml(v, f"{name}.")
            out += f"\n[{name}]\n{body}"
        else:
            for item in v:
                out += f"\n[[{name}]]\n{to_toml(item, f'{name}.')}"
    return out
