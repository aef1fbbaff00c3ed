"""Label matchers and silences, with Alertmanager's semantics.

An alert is seen as a flat label set (:func:`labels_of`): ``detector``, ``severity``,
``identity`` (the identity key) plus the alert's own ``labels``. A :class:`Matcher` tests one
label with ``=``, ``!=``, ``=~`` or ``!~``; regexes are anchored at both ends like Alertmanager's,
and a missing label compares as the empty string. A :class:`Silence` mutes every alert that all
of its matchers match while ``starts_at <= now < ends_at`` and it has not been expired.

Everything here is pure; the store persists silences and :mod:`alerts.route` applies them.

>>> m = parse_matcher("severity=~high|critical")
>>> m.matches({"severity": "critical"}), m.matches({"severity": "medium"})
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Final, Literal

import msgspec

from alerts.errors import SilenceError
from detect.alert import Alert

__all__ = ["OPERATORS", "Matcher", "Silence", "labels_of", "parse_matcher", "parse_matchers", "matches_all"]

Operator = Literal["=", "!=", "=~", "!~"]
OPERATORS: Final = ("=", "!=", "=~", "!~")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Longest operators first so "!=~"-like input never splits on "=".
_SPLIT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(f"^(?:{pattern})$")
    except re.error as exc:
        raise SilenceError(f"invalid regular expression in matcher: {exc}") from exc


class Matcher(msgspec.Struct, frozen=True):
    """One label test: ``name op value``."""

    name: str
    op: Operator
    value: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SilenceError(f"invalid matcher label name {self.name!r}")
        if self.op not in OPERATORS:
            raise SilenceError(f"invalid matcher operator {self.op!r}; use one of {', '.join(OPERATORS)}")
        if self.op in ("=~", "!~"):
            _compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = _compile(self.value).match(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(spec: str | Mapping[str, Any] | Matcher) -> Matcher:
    """A matcher from ``"name=value"``-style text, a ``{"name", "op", "value"}`` dict, or a Matcher."""
    if isinstance(spec, Matcher):
        return spec
    if isinstance(spec, Mapping):
        try:
            return msgspec.convert(dict(spec), Matcher)
        except msgspec.ValidationError as exc:
            raise SilenceError(f"invalid matcher: {exc}") from exc
    found = _SPLIT.match(spec)
    if not found:
        raise SilenceError(f"invalid matcher {spec!r}: expected name, one of = != =~ !~, then a value")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return Matcher(name, op, value)  # type: ignore[arg-type]  # op is one of OPERATORS by the regex


def parse_matchers(specs: Iterable[str | Mapping[str, Any] | Matcher]) -> tuple[Matcher, ...]:
    """Parse a list of matcher specs (see :func:`parse_matcher`)."""
    return tuple(parse_matcher(s) for s in specs)


def labels_of(alert: Alert) -> dict[str, str]:
    """The flat label set matchers, routes, grouping and inhibition look at."""
    labels = dict(alert.labels)
    labels["detector"] = alert.detector
    labels["severity"] = alert.severity
    labels["identity"] = alert.identity.key
    return labels


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """A time-boxed mute: alerts matched by every matcher are not notified while it is active."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str = ""
    expired: bool = False
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.matchers:
            raise SilenceError("a silence needs at least one matcher")
        if all(m.matches({}) for m in self.matchers):
            # Alertmanager's rule: a silence whose matchers all match the empty label set would
            # mute everything, which is never what an operator meant.
            raise SilenceError("a silence needs at least one matcher that does not match an empty label")
        if self.ends_at <= self.starts_at:
            raise SilenceError("a silence must end after it starts")

    def is_active(self, now: float) -> bool:
        """Active: not expired and ``starts_at <= now < ends_at``."""
        return not self.expired and self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with these labels at ``now``."""
        return self.is_active(now) and matches_all(self.matchers, labels)
