"""What vaultwatch saw in a stream of audit entries: a small accumulator and its renderings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ingest.event import AuditEvent

__all__ = ["Summary"]


@dataclass
class Summary:
    """Counts of events, identities, outcomes and parse failures."""

    lines: int = 0
    events: int = 0
    duplicates: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    identities: Counter[str] = field(default_factory=Counter)
    identity_kinds: dict[str, str] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    plaintext_entries: int = 0
    first_ts: float | None = None
    last_ts: float | None = None

    def add_event(self, ev: AuditEvent) -> None:
        self.lines += 1
        self.events += 1
        self.by_type[ev.type] += 1
        self.outcomes[ev.outcome] += 1
        key = ev.identity.key
        self.identities[key] += 1
        self.identity_kinds.setdefault(key, ev.identity.kind)
        if ev.plaintext_fields:
            self.plaintext_entries += 1
        if self.first_ts is None or ev.ts < self.first_ts:
            self.first_ts = ev.ts
        if self.last_ts is None or ev.ts > self.last_ts:
            self.last_ts = ev.ts

    def add_skipped(self, *, duplicates: int, failures: Counter[str]) -> None:
        """Count lines that became no event: duplicates dropped, and parse failures by reason."""
        self.duplicates += duplicates
        self.failures.update(failures)
        self.lines += duplicates + sum(failures.values())

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        kinds = Counter(self.identity_kinds.values())
        return {
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "parse_failures": sum(self.failures.values()),
            "parse_failures_by_reason": dict(self.failures),
            "by_type": dict(self.by_type),
            "outcomes": dict(self.outcomes),
            "identities": len(self.identities),
            "identities_by_kind": dict(kinds),
            "top_identities": [
                {"key": k, "kind": self.identity_kinds[k], "events": n}
                for k, n in self.identities.most_common(top)
            ],
            "entries_with_plaintext_values": self.plaintext_entries,
            "first_event": self.first_ts,
            "last_event": self.last_ts,
        }

    def render(self, console: Any, *, title: str = "What vaultwatch saw", top: int = 15) -> None:
        """Print the summary as rich tables."""
        from datetime import UTC, datetime

        from rich.table import Table

        def when(ts: float | None) -> str:
            return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"

        t = Table(title=title, show_header=False, title_justify="left")
        t.add_row("lines read", str(self.lines))
        t.add_row("events", str(self.events))
        t.add_row(
            "  request / response", f"{self.by_type.get('request', 0)} / {self.by_type.get('response', 0)}"
        )
        t.add_row("duplicates dropped", str(self.duplicates))
        t.add_row("parse failures (quarantined)", str(sum(self.failures.values())))
        for reason, n in sorted(self.failures.items()):
            t.add_row(f"  {reason}", str(n))
        t.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common()))
        t.add_row("identities", str(len(self.identities)))
        t.add_row("entries with plaintext values (redacted)", str(self.plaintext_entries))
        t.add_row("event time span", f"{when(self.first_ts)} .. {when(self.last_ts)}")
        console.print(t)
        it = Table(title=f"Top {min(top, len(self.identities))} identities", title_justify="left")
        it.add_column("identity key")
        it.add_column("kind")
        it.add_column("events", justify="right")
        for key, n in self.identities.most_common(top):
            it.add_row(key, self.identity_kinds[key], str(n))
        console.print(it)
