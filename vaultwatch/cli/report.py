"""``vaultwatch report``: render an audit review report (HTML, PDF and JSON) for a period."""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path

HELP = "render an audit review report (HTML and PDF) for a period"
DESCRIPTION = """\
Render an audit review report from the event archive and the alert store: a summary with the
change from the previous period, access (volume, top identities and secrets, new and returning
identities, off-hours use), denials and failed logins, alerts (by detector and severity, time to
acknowledge and resolve, old open alerts, false-positive rate), configuration changes, rotation
compliance, least-privilege findings (from `vaultwatch check --json`) and a sign-off block with
the SHA-256 of the report's data.

Files go to <out>/reports/<period-id>/report.{html,pdf,json}. The archive and store come from
the configuration (--config or $VAULTWATCH_CONFIG) unless --archive/--store are given.

examples:
  vaultwatch report --period weekly                      # last complete ISO week
  vaultwatch report --from 2026-09-14 --to 2026-09-21 --out ./out
  vaultwatch report --period monthly --check-json check.json --config vaultwatch.toml
"""

log = logging.getLogger(__name__)

#: How to get an event archive, when there is none where the report looks.
NO_ARCHIVE_HINT = (
    "a report reads an event archive: the one `vaultwatch run` writes ([archive] enabled = true), or "
    "one made from recorded audit logs with `vaultwatch replay FILE... --alerts-out alerts.jsonl "
    "--archive DIR --store URL`; then pass --archive DIR and --store URL (or --no-store)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--period", choices=["daily", "weekly", "monthly"], help="the last complete period before --now"
    )
    when.add_argument(
        "--from", dest="start", metavar="TIME", help="start (ISO 8601, inclusive; UTC if no zone)"
    )
    p.add_argument("--to", dest="end", metavar="TIME", help="end (ISO 8601, exclusive); with --from")
    p.add_argument("--now", metavar="TIME", help="reference time for --period (default: now)")
    p.add_argument("--config", metavar="FILE", help="vaultwatch configuration file (TOML)")
    p.add_argument(
        "--archive", metavar="DIR", help="event archive directory (default: from the configuration)"
    )
    p.add_argument("--store", metavar="URL", help="alert store URL (default: from the configuration)")
    p.add_argument("--no-store", action="store_true", help="report without alerts")
    p.add_argument("--check-json", metavar="FILE", help="results of `vaultwatch check --json` to include")
    p.add_argument("--out", default="var", metavar="DIR", help="output root (default var)")
    p.add_argument("--top", type=int, default=10, help="rows in the top-N tables (default 10)")
    p.add_argument(
        "--open-days", type=float, default=7.0, help="list open alerts older than this (default 7)"
    )
    p.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="announce the report via the alert outbox to this endpoint (receiver/kind/index); repeatable",
    )
    p.add_argument("--base-url", help="public address of the API, for the link in --notify messages")
    p.add_argument(
        "--work-hours",
        default="8-18",
        metavar="H-H",
        help="working hours, UTC, Monday to Friday (default 8-18)",
    )


def _when(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from alerts.errors import StoreError
    from detect.policy import PolicyError

    from ..report import (
        Period,
        ReportError,
        ReportOptions,
        enqueue_report,
        generate_report,
        load_check,
        period_for,
    )
    from ..service.reports import metadata_ages
    from ..settings import ConfigError, load_settings
    from .console import console

    err = console(stderr=True)
    try:
        now = _when(args.now) if args.now else datetime.now(UTC)
        if args.period:
            period = period_for(args.period, now)
        else:
            if not args.end:
                err.print("[red]error:[/red] --from needs --to")
                return 2
            start, end = _when(args.start), _when(args.end)
            if end <= start:
                err.print("[red]error:[/red] --to must be after --from")
                return 2
            period = Period("custom", start, end)
        lo, _, hi = args.work_hours.partition("-")
        options = ReportOptions(
            top=args.top, open_older_than_days=args.open_days, work_start=int(lo), work_end=int(hi)
        )
        if not 0 <= options.work_start < options.work_end <= 24:
            raise ValueError("--work-hours must be H-H with 0 <= start < end <= 24")
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    try:
        settings = (
            load_settings(args.config)
            if (args.config or not (args.archive and (args.store or args.no_store)))
            else None
        )
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    archive = args.archive or (str(settings.archive.path) if settings else None)
    store = None if args.no_store else (args.store or (settings.store.url if settings else None))
    policy = None
    if args.notify and not store:
        err.print(
            "[red]error:[/red] --notify needs the alert store (its outbox): pass --store URL, or --config "
            "with a [store] section, and drop --no-store"
        )
        return 2
    try:
        if settings is not None and settings.detect.policy_file:
            from ..settings import load_policy

            policy = load_policy(settings.detect.policy_file)
        check = load_check(args.check_json) if args.check_json else None
        ages = None
        if settings is not None and settings.vault is not None:
            from detect.policy import default_policy

            ages = metadata_ages(settings, policy or default_policy(), now)
        result = generate_report(
            archive or "var/archive",
            store,
            period,
            args.out,
            policy=policy,
            check=check,
            metadata_ages=ages,
            options=options,
        )
    except (ReportError, StoreError, PolicyError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        if not Path(archive or "var/archive").is_dir():
            err.print(f"[dim]hint:[/dim] {escape(NO_ARCHIVE_HINT)}")
        elif isinstance(exc, StoreError) and "no alert store" in str(exc):
            err.print(
                "[dim]hint:[/dim] pass --store with the URL `vaultwatch run` or `vaultwatch replay --store` "
                "wrote to, or --no-store for a report without alerts"
            )
        return 2
    if args.notify and store:
        base_url = args.base_url or (settings.api.public_base_url if settings else None)
        try:
            enqueue_report(store, result, args.notify, base_url)
        except (ReportError, StoreError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 2
    s = result.data["summary"]
    err.print(
        f"report {period.id}: {s['events']} requests, {s['identities']} identities, {s['alerts']} alerts; "
        f"sha256 {result.sha256}"
    )
    print(result.html)  # noqa: T201 - the output a script picks up
    print(result.pdf)  # noqa: T201
    print(result.json)  # noqa: T201
    return 0
