"""What a transport's answer means for delivery: the one status classifier and retry parsing.

One status classifier (:func:`classify_status`) decides what an HTTP answer means for every
HTTP channel: 2xx done, 429 and 5xx retried, 410 disables the endpoint, every other 4xx and every
3xx fails permanently (redirects are never followed: a webhook that redirects is misconfigured or
hijacked, and following it would defeat the SSRF guard). :func:`parse_retry_after` reads a
``Retry-After`` header; :func:`describe_exception` names a transport failure without quoting it.

This module sits below the channels and the delivery worker and imports nothing of ``alerts``,
so both can use it without an import cycle.
"""

from __future__ import annotations

import email.utils
import errno
from dataclasses import dataclass

__all__ = ["Verdict", "classify_status", "describe_exception", "parse_retry_after"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an HTTP status means for delivery."""

    ok: bool
    retryable: bool
    disable: bool = False


def classify_status(status: int) -> Verdict:
    """Classify an HTTP status code: 2xx ok; 429/5xx retry; 410 disable; other 3xx/4xx (and 1xx,
    which a finished exchange should never end with) fail permanently."""
    if 200 <= status <= 299:
        return Verdict(ok=True, retryable=False)
    if status == 429 or 500 <= status <= 599:
        return Verdict(ok=False, retryable=True)
    if status == 410:
        return Verdict(ok=False, retryable=False, disable=True)
    return Verdict(ok=False, retryable=False)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unparseable. A date in the past yields 0."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception: its class and, for OS errors,
    the errno name. Exception messages are not used because some libraries quote the URL."""
    name = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return f"{name} ({errno.errorcode.get(cause.errno, str(cause.errno))})"
        cause = cause.__cause__ or cause.__context__
    return name
