"""``vaultwatch inspect``: parse audit logs and summarise what is in them."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, OrderedDict
from typing import Final

from detect.config import DetectConfig
from detect.drift import DriftWatch
from detect.policy import PolicyError
from ingest.dedup import Deduplicator
from ingest.errors import SourceError
from ingest.event import AuditEvent
from ingest.parse import DEFAULT_MAX_LINE_BYTES, Parser
from ingest.pipeline import iter_events
from ingest.quarantine import FileQuarantine, MemoryQuarantine, Quarantine
from ingest.sources.file import FileSource
from ingest.sources.stdin import StdinSource

from ..service.summary import Summary
from ..settings import load_policy
from .access_model import print_drift

#: How long a request entry waits for its response before it stands alone (the engine's default).
REQUEST_WAIT_SECONDS: Final = DetectConfig().request_wait_seconds

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
    p.add_argument(
        "--quarantine-key-file",
        metavar="PATH",
        help="the key encrypting the quarantine (default: $VAULTWATCH_QUARANTINE_KEY_FILE, "
        "else ~/.config/vaultwatch/quarantine.key, created on first use)",
    )
    p.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")
    p.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help=f"longer lines are quarantined as too_large (default {DEFAULT_MAX_LINE_BYTES})",
    )
    p.add_argument("--top", type=int, default=15, help="how many identities to list (default 15)")
    p.add_argument(
        "--policy",
        metavar="TOML",
        help="access model whose protected and rotation globs are checked against the logs "
        "(default: the packaged one)",
    )


def summarise(
    paths: list[str],
    parser: Parser,
    quarantine: Quarantine,
    summary: Summary | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    drift: DriftWatch | None = None,
) -> Summary:
    """Read every entry of ``paths`` (files, ``.gz``, directories, ``-`` for stdin) into a
    :class:`Summary` through the ingest pipeline; what fails to parse goes to ``quarantine``.

    Identities are counted per request, as ``replay`` and the engine count them (see
    :class:`RequestAttribution`): both entries of a request belong to the identity of its response.
    """
    summary = summary or Summary()
    attribution = RequestAttribution()
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
            attribution.add(ev)
            if drift is not None:
                drift.observe(ev)
    attribution.close()
    summary.identities = attribution.entries
    summary.identity_kinds = attribution.kinds
    failures = Counter(quarantine.counts)
    failures.subtract(before)
    summary.add_skipped(duplicates=dedup.duplicates, failures=+failures)
    return summary


class RequestAttribution:
    """Who made each request, counted the way the detection engine learns identities.

    A request entry is judged with its response: the pair belongs to the identity of the response
    entry (a login request names its target, ``login:userpass:alice``; its response names the
    entity that logged in, and only that is an identity the engine learns). A request entry whose
    response never comes within ``wait`` seconds of event time, or that has no request id, stands
    alone under its own identity; a response arriving after that is counted with its request.
    ``entries`` counts audit entries per identity key (both entries of a request), ``kinds`` the
    kind of each key.
    """

    def __init__(self, wait: float = REQUEST_WAIT_SECONDS) -> None:
        self.wait = wait
        self.entries: Counter[str] = Counter()
        self.kinds: dict[str, str] = {}
        self._pending: OrderedDict[str, AuditEvent] = OrderedDict()
        self._alone: dict[str, str] = {}  # request id -> the key its lone request was counted under

    def add(self, ev: AuditEvent) -> None:
        rid = ev.request_id
        if rid and ev.is_response and rid in self._alone:
            self.entries[self._alone.pop(rid)] += 1  # late: the engine judged the request alone
        elif ev.is_request and rid:
            old = self._pending.pop(rid, None)
            if old is not None:
                self._count(old)
            self._pending[rid] = ev
        else:
            req = self._pending.pop(rid, None) if rid else None
            if req is not None:
                self._count(ev)
            self._count(ev)
        self._expire(ev.ts - self.wait)

    def close(self) -> None:
        """The end of the stream: every request still waiting stands alone."""
        self._expire(float("inf"))

    def _expire(self, before: float) -> None:
        pend = self._pending
        while pend:
            rid, req = next(iter(pend.items()))
            if req.ts > before:
                break
            del pend[rid]
            self._count(req)
            self._alone[rid] = req.identity.key
            if len(self._alone) > 100_000:
                del self._alone[next(iter(self._alone))]

    def _count(self, owner: AuditEvent) -> None:
        ident = owner.identity
        self.entries[ident.key] += 1
        self.kinds.setdefault(ident.key, ident.kind)


def run(args: argparse.Namespace) -> int:
    from .console import console

    parser = Parser(prefix=args.prefix, max_line_bytes=args.max_line_bytes)
    quarantine: Quarantine = (
        FileQuarantine(args.quarantine, key_file=args.quarantine_key_file)
        if args.quarantine
        else MemoryQuarantine()
    )
    err = console(stderr=True)
    try:
        drift = DriftWatch(load_policy(args.policy))
    except PolicyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    try:
        summary = summarise(args.paths, parser, quarantine, max_line_bytes=args.max_line_bytes, drift=drift)
    except SourceError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read input: {exc.strerror or exc}")
        return 2
    finally:
        quarantine.close()
    report = drift.report()
    if args.json:
        json.dump(
            {**summary.to_dict(top=args.top), "access_model_drift": report.to_dict()}, sys.stdout, indent=2
        )
        sys.stdout.write("\n")
    else:
        summary.render(console(), top=args.top)
        print_drift(err, report.to_dict())
        if summary.failures and not args.quarantine:
            err.print("[yellow]note:[/yellow] pass --quarantine FILE to keep the lines that failed to parse")
    return 0
