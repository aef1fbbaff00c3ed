"""``vaultwatch inspect``: parse audit logs and summarise what is in them."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from ingest.dedup import Deduplicator
from ingest.errors import ParseError
from ingest.parse import DEFAULT_MAX_LINE_BYTES, Parser
from ingest.quarantine import FileQuarantine, MemoryQuarantine, Quarantine

from ..summary import Summary

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


def _files(paths: list[str]) -> Iterator[Path | None]:
    for raw in paths:
        if raw == "-":
            yield None
            continue
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.iterdir() if f.is_file())
        elif p.exists():
            yield p
        else:
            raise FileNotFoundError(raw)


def _open(p: Path | None) -> IO[bytes]:
    if p is None:
        return sys.stdin.buffer
    if p.suffix == ".gz":
        return cast(IO[bytes], gzip.open(p, "rb"))
    return open(p, "rb")  # noqa: SIM115 - closed by the caller


def summarise(
    paths: list[str], parser: Parser, quarantine: Quarantine, summary: Summary | None = None
) -> Summary:
    """Read every line of ``paths`` into a :class:`Summary`, quarantining what fails to parse."""
    summary = summary or Summary()
    dedup = Deduplicator()
    for path in _files(paths):
        name = "stdin" if path is None else str(path)
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                try:
                    ev = parser.parse(line, source=name)
                except ParseError as err:
                    quarantine.put(line, err, source=name, position=f"line {lineno}")
                    summary.add_failure(err)
                    continue
                if dedup.is_duplicate(ev):
                    summary.add_duplicate()
                else:
                    summary.add_event(ev)
    return summary


def run(args: argparse.Namespace) -> int:
    from ..console import console

    parser = Parser(prefix=args.prefix, max_line_bytes=args.max_line_bytes)
    quarantine: Quarantine = FileQuarantine(args.quarantine) if args.quarantine else MemoryQuarantine()
    err = console(stderr=True)
    try:
        summary = summarise(args.paths, parser, quarantine)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/red] no such file or directory: {exc}")
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
