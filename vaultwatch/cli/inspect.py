"""``vaultwatch inspect``: parse audit logs and summarise what is in them."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from ingest.dedup import Deduplicator
from ingest.errors import SourceError
from ingest.parse import DEFAULT_MAX_LINE_BYTES, Parser
from ingest.quarantine import FileQuarantine, MemoryQuarantine, Quarantine

from ..service.summary import Summary

HELP = "parse audit logs and summarise events, identities and parse failures"
DESCRIPTION = """\
Parse Vault/OpenBao audit logs (plain or .gz, files or directories) and print what is in them:
events, identities, outcomes and parse failures. Nothing is detected or stored; lines that do not
parse are counted by reason and, with --quarantine, written to a file (mode 0600) with their bytes.

examples:
  vaultwatch inspect /var/log/vault/audit.log
  vaultwatch inspect audit.log.1.gz audit.log --json
  vaultwatch inspect audit.log --quarantine bad-lines.jsonl
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="audit log files or directories ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quarantine", metavar="FILE", help="write unparseable lines to FILE (JSON lines)")
    p.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")
    p.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help=f"longer lines are quarantined as too_large (default {DEFAULT_MAX_LINE_BYTES})",
    )
    p.add_argument("--top", type=int, default=15, help="how many identities to list (default 15)")


def summarise(
    paths: list[str],
    parser: Parser,
    quarantine: Quarantine,
    summary: Summary | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Summary:
    """Read every entry of ``paths`` (files, ``.gz``, directories, ``-`` for stdin) into a
    :class:`Summary` through the ingest pipeline; what fails to parse goes to ``quarantine``."""
    from ingest.pipeline import iter_events
    from ingest.sources.file import FileSource
    from ingest.sources.stdin import StdinSource

    summary = summary or Summary()
    dedup = Deduplicator()
    before = Counter(quarantine.counts)
    for raw in paths:
        source = (
            StdinSource(max_line_bytes=max_line_bytes)
            if raw == "-"
            else FileSource(raw, max_line_bytes=max_line_bytes)
        )
        for ev in iter_events(source, parser=parser, quarantine=quarantine, dedup=dedup):
            summary.add_event(ev)
    failures = Counter(quarantine.counts)
    failures.subtract(before)
    summary.add_skipped(duplicates=dedup.duplicates, failures=+failures)
    return summary


def run(args: argparse.Namespace) -> int:
    from .console import console

    parser = Parser(prefix=args.prefix, max_line_bytes=args.max_line_bytes)
    quarantine: Quarantine = FileQuarantine(args.quarantine) if args.quarantine else MemoryQuarantine()
    err = console(stderr=True)
    try:
        summary = summarise(args.paths, parser, quarantine, max_line_bytes=args.max_line_bytes)
    except SourceError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read input: {exc.strerror or exc}")
        return 2
    finally:
        quarantine.close()
    if args.json:
        json.dump(summary.to_dict(top=args.top), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        summary.render(console(), top=args.top)
        if summary.failures and not args.quarantine:
            err.print("[yellow]note:[/yellow] pass --quarantine FILE to keep the lines that failed to parse")
    return 0
