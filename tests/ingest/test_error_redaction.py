"""A secret in the top-level ``error`` goes through redaction, like request and response data,
so the archive, the shipper and every other consumer only ever see the redacted text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest import REDACTED, Parser
from ingest.codec import encode_entry
from vaultwatch.service.archive import event_row

CANARY = "canary-err-3d9b71f0"


def _entry(error: str, **request: Any) -> bytes:
    req = {"id": "r-1", "operation": "update", "path": "database/config/pg", "namespace": {"id": "root"}}
    req.update(request)
    return json.dumps(
        {
            "time": "2026-01-01T00:00:00Z",
            "type": "response",
            "auth": {"token_type": "default"},
            "request": req,
            "error": error,
        }
    ).encode()


@pytest.mark.parametrize(
    "error",
    [
        f"error creating database object: pq: password authentication failed, password={CANARY}",
        f"1 error occurred:\n\t* connection failed: postgres://vault:{CANARY}@db:5432/app\n\n",
        f'invalid request: {{"secret_id": "{CANARY}"}}',
        f"token lookup failed for hvs.{CANARY.replace('-', '')}abcdefghijkl",
        f"upstream said: Authorization: Bearer {CANARY}",
    ],
)
def test_secret_shaped_error_text_is_redacted_everywhere(error: str) -> None:
    ev = Parser().parse(_entry(error))
    assert ev.error is not None and CANARY not in ev.error and REDACTED in ev.error
    assert "error" in ev.plaintext_fields
    assert CANARY.encode() not in encode_entry(ev)
    assert CANARY not in str(event_row(ev))
    # Stable: the forwarded (redacted) entry parses back to the same event.
    assert Parser().parse(encode_entry(ev)) == ev


def test_a_log_raw_value_repeated_in_the_error_is_redacted() -> None:
    # log_raw: the request data holds the plaintext; the plugin echoes it in its error.
    line = _entry(f"cannot connect with connection_url {CANARY}", data={"connection_url": CANARY})
    ev = Parser().parse(line)
    assert ev.error == f"cannot connect with connection_url {REDACTED}"
    assert set(ev.plaintext_fields) == {"request.data.connection_url", "error"}
    assert CANARY not in str(event_row(ev))


def test_ordinary_errors_are_kept_and_classified_as_before() -> None:
    for error, outcome in [
        ("1 error occurred:\n\t* permission denied\n\n", "denied"),
        ("internal error", "error"),
    ]:
        ev = Parser().parse(_entry(error))
        assert ev.error == error and ev.outcome == outcome and "error" not in ev.plaintext_fields
    login = Parser().parse(
        _entry("invalid username or password", path="auth/userpass/login/alice", data={"password": CANARY})
    )
    assert login.outcome == "login_failed" and login.error == "invalid username or password"


def _with_data(error: str, data: dict[str, str]) -> bytes:
    entry = json.loads(_entry(error))
    entry["response"] = {"data": data}
    return json.dumps(entry).encode()


@pytest.mark.parametrize(
    ("error", "data", "kept", "outcome"),
    [
        # A short value inside a word is not a secret shown: "permission denied" stays whole.
        ("permission denied", {"x": "on d"}, "permission denied", "denied"),
        # A value that is a word of Vault's outcome phrase: the phrase is kept, so is the outcome.
        ("1 error occurred: permission denied", {"x": "denied"}, "permission denied", "denied"),
        # A short value standing as a token is replaced.
        ("lookup failed for abc1: try again", {"x": "abc1"}, f"lookup failed for {REDACTED}: try", "error"),
        # A long value is replaced wherever it is.
        (f"bad key x{CANARY}y", {"x": CANARY}, f"bad key x{REDACTED}y", "error"),
    ],
)
def test_error_scrubbing_keeps_words_and_outcomes_through_the_shipper(
    error: str, data: dict[str, str], kept: str, outcome: str
) -> None:
    """Found by ``make fuzz``: a four-character data value turned ``permission denied`` into
    ``permissi[REDACTED]enied``, and the shipper's re-encoded entry then read as an error, not a
    denial. The redacted error keeps words and Vault's outcome phrases, so a round trip through
    ``vaultwatch ship`` (re-encode, parse again) keeps the outcome."""
    parser = Parser()
    ev = parser.parse(_with_data(error, data))
    assert ev.outcome == outcome
    assert kept in (ev.error or "")
    again = parser.parse(encode_entry(ev))
    assert again.outcome == outcome
    assert kept in (again.error or "")
