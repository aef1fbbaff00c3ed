"""Read Vault/OpenBao ACL policies (HCL or JSON) into path rules, and compare path globs.

Only what least-privilege checks need: each ``path "<glob>" { capabilities = [...] }`` block, with
the deprecated ``policy = "read"`` shorthand expanded. The tokenizer understands HCL comments
(``#``, ``//``, ``/* */``), strings, lists and nested objects, and ignores other attributes.

>>> rules = parse_policy('path "kv/data/app/*" { capabilities = ["read"] } # trailing')
>>> rules[0].path, rules[0].capabilities
('kv/data/app/*', ('read',))
>>> glob_reaches("kv/data/*", "kv/data/app/")
True
>>> glob_reaches("kv/data/other/*", "kv/data/app/")
False
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import VaultwatchError

__all__ = ["PathRule", "PolicyParseError", "parse_policy", "glob_reaches", "glob_within"]

_LEGACY = {
    "deny": ("deny",),
    "read": ("read", "list"),
    "write": ("create", "read", "update", "delete", "list"),
    "sudo": ("create", "read", "update", "delete", "list", "sudo"),
}
_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_\-.]*|-?\d+(?:\.\d+)?|[{}\[\]=,:]""",
    re.S,
)


class PolicyParseError(VaultwatchError, ValueError):
    """A policy text could not be read."""


@dataclass(frozen=True)
class PathRule:
    """One ``path`` block: its glob, capabilities, and the request parameters it restricts
    (``allowed_parameters`` / ``denied_parameters`` keys; None when the block sets none)."""

    path: str
    capabilities: tuple[str, ...]
    allowed_parameters: tuple[str, ...] | None = None
    denied_parameters: tuple[str, ...] = ()

    def parameter_settable(self, name: str) -> bool:
        """True when a caller may pass request parameter ``name`` under this block."""
        if name in self.denied_parameters or "*" in self.denied_parameters:
            return False
        allowed = self.allowed_parameters
        return allowed is None or name in allowed or "*" in allowed

    @property
    def grants(self) -> frozenset[str]:
        """Capabilities that give access (``deny`` grants nothing)."""
        caps = frozenset(self.capabilities)
        return frozenset() if "deny" in caps else caps


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PolicyParseError(f"unexpected character at offset {pos}")
        tok = m.group(0)
        pos = m.end()
        if tok.isspace() or tok.startswith(("#", "//", "/*")):
            continue
        out.append(tok)
    return out


class _Parser:
    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expect: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expect is not None and tok != expect):
            raise PolicyParseError(f"expected {expect or 'a token'}, found {tok or 'end of policy'}")
        self.i += 1
        return tok

    def value(self) -> Any:
        tok = self.take()
        if tok == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.take()
            self.take("]")
            return items
        if tok == "{":
            return self.body("}")
        if tok.startswith('"'):
            return json.loads(tok)
        return tok

    def body(self, end: str | None) -> dict[str, Any]:
        """Attributes (``k = v``) and blocks (``name "label" { ... }``) until ``end``."""
        out: dict[str, Any] = {}
        while self.peek() != end:
            if self.peek() is None:
                raise PolicyParseError("unclosed block")
            key = self.take()
            key = json.loads(key) if key.startswith('"') else key
            if self.peek() in ("=", ":"):
                self.take()
                out[key] = self.value()
            else:
                labels = []
                while self.peek() is not None and self.peek() != "{":
                    lab = self.take()
                    labels.append(json.loads(lab) if lab.startswith('"') else lab)
                self.take("{")
                block = self.body("}")
                out.setdefault(key, []).append((tuple(labels), block))
            if self.peek() == ",":
                self.take()
        if end is not None:
            self.take(end)
        return out


def parse_policy(text: str) -> list[PathRule]:
    """Path rules of an HCL or JSON policy."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PolicyParseError(f"invalid JSON policy: {exc.msg}") from None
        paths = doc.get("path", {}) if isinstance(doc, dict) else {}
        return [_rule(p, body) for p, body in paths.items() if isinstance(body, dict)]
    doc = _Parser(_tokens(text)).body(None)
    rules = []
    for labels, body in doc.get("path", []):
        if labels:
            rules.append(_rule(str(labels[0]), body))
    return rules


def _param_names(value: Any) -> tuple[str, ...] | None:
    """Keys of an ``allowed_parameters``/``denied_parameters`` value (HCL gives a list of one
    object per block; JSON an object)."""
    if isinstance(value, list):
        names: list[str] = []
        for item in value:
            if isinstance(item, dict):
                names.extend(str(k) for k in item)
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
                names.extend(str(k) for k in item[1])
        return tuple(names)
    if isinstance(value, dict):
        return tuple(str(k) for k in value)
    return None


def _rule(path: str, body: dict[str, Any]) -> PathRule:
    caps = body.get("capabilities")
    allowed = _param_names(body.get("allowed_parameters"))
    denied = _param_names(body.get("denied_parameters")) or ()
    if isinstance(caps, list):
        return PathRule(path, tuple(str(c) for c in caps), allowed, denied)
    legacy = body.get("policy")
    if isinstance(legacy, str):
        return PathRule(path, _LEGACY.get(legacy, (legacy,)), allowed, denied)
    return PathRule(path, (), allowed, denied)


def _segments(glob: str) -> tuple[list[str], bool]:
    star = glob.endswith("*")
    return glob.rstrip("*").split("/"), star


def glob_reaches(glob: str, prefix: str) -> bool:
    """True when a policy path glob can match some path under ``prefix`` (``prefix`` ends in /).

    ``*`` is a trailing prefix glob and ``+`` one path segment, as in Vault.
    """
    gsegs, star = _segments(glob)
    psegs = prefix.rstrip("/").split("/")
    for i, p in enumerate(psegs):
        if i >= len(gsegs):
            return False
        g = gsegs[i]
        last = i == len(gsegs) - 1
        if last and star:
            return p.startswith(g) or g == "+"
        if g != "+" and g != p:
            return False
    # The prefix is fully matched: the glob reaches inside it when it is longer or a glob.
    return len(gsegs) > len(psegs) or star or (len(gsegs) == len(psegs) and gsegs[-1] == psegs[-1])


def glob_within(glob: str, allowed: str) -> bool:
    """True when every path ``glob`` can match is also matched by the ``allowed`` glob."""
    if allowed.endswith("*"):
        return glob.startswith(allowed[:-1])
    return glob == allowed
