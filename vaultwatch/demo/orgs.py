"""Organisations for detection evaluation: a real OpenBao server driven from a spec drawn from a seed.

Contract (kept stable for the scoreboard; ``make eval`` and the CI organisations build on it)::

    generate_org(seed: int, *, size: str | None = None, days: int | None = None,
                 workdir: Path) -> OrgLog

* ``size``: ``"small"`` (10-30 identities, 10 simulated days of which 7 are learning; CI),
  ``"medium"`` (the default: 30-120 identities, 14 days, 7 learning) or ``"large"`` (about 300
  identities, 28 days, 14 learning). ``days`` overrides the length (learning stays at most
  ``days - 2``). Nothing else varies with the size; everything else is drawn from ``seed``.
* ``workdir`` is the cache root (``make eval`` passes ``var/eval``): the organisation is written
  to ``workdir/<spec_hash>/`` and reused, without starting a server, when that directory holds a
  ``meta.json`` (written last; generation goes to a temporary directory renamed into place, so
  concurrent generators of different seeds in one workdir are safe).
* :class:`OrgLog` fields:

  - ``audit_path``: the real audit log of a real OpenBao dev server, JSON lines as a Vault/OpenBao
    ``file`` device writes them, with each entry's ``time`` (and its tokens' ``token_issue_time``)
    moved to the simulated time the generator chose for the request. Entries are in simulated
    time order. The dev server's own bootstrap entries and the organisation's setup come first,
    the afternoon before ``sim_start``;
  - ``labels_path``: JSON ``{"threats": [...], "benign_hard_cases": [...]}``; each item is
    ``{"instance": str, "kind": str, "target": str, "request_ids": [str, ...],
    "first_time": RFC3339}`` plus informative extras: ``actor`` (whose credentials were used),
    ``single_event`` and ``trigger`` (index in ``request_ids`` of the request that *is* the attack,
    for :data:`~vaultwatch.demo.threats.SINGLE_EVENT` kinds), ``outcome`` (``allowed``,
    ``denied`` or ``mixed``, as Vault answered), ``canaries`` (plaintext values the
    ``plaintext-secret-in-stream`` attack wrote: they must never appear in an alert), ``paths``
    (``secret-destruction``) and ``due_time`` (``rotation-overdue``: when the skipped rotation
    fell due; its ``request_ids`` are the first reads of the stale secret after that, and
    ``first_time`` is ``due_time``). ``request_ids`` are in log order and include failed and
    refused requests; a request id is in at most one item. Every other request id in the log is
    ordinary benign traffic (or setup, before ``sim_start``). ``first_time`` of a threat is at
    least ``learning_days`` after ``sim_start``;
  - ``spec_path``: the drawn deployment spec as JSON (names, mounts, identities, schedules,
    drifted grants, planned hard cases and threats);
  - ``spec_hash``: 16 hex chars of sha256 over the canonical spec and the generator version;
  - ``stats``: ``seed``, ``size``, ``days``, ``learning_days``, ``sim_start``, ``identities``,
    ``requests``, ``entries``, ``seconds`` (generation wall time), as in ``meta.json``.

Threat kinds: :data:`~vaultwatch.demo.threats.THREAT_KINDS` (34; ``sensitive-first-access`` has
three instances per organisation: ``developer->runtime``, ``runtime->build`` and ``ci->runtime``).
Benign hard-case kinds: :data:`~vaultwatch.demo.org_life.HARD_CASE_KINDS`. Both are re-exported
here. :func:`draw_spec` gives the spec alone (pure, no server); :func:`generate_orgs` generates
several, two at a time by default (the 2-core box's second core; each has its own server).

Determinism: the same seed gives the same spec, the same request sequence and the same rewritten
log (times, paths, operations, addresses, errors) and labels; only values Vault generates (request
ids, accessors, HMACs) differ between runs. Bump
:data:`~vaultwatch.demo.org_spec.GENERATOR_VERSION` whenever a change alters what a seed yields.

Run one by hand: ``python -m vaultwatch.demo.orgs SEED [SIZE] [WORKDIR]``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .org_driver import Driver, DriverError, rfc3339
from .org_life import DAY, HARD_CASE_KINDS, Org
from .org_spec import SIZES, OrgSpec, draw_layout, spec_hash
from .threats import THREAT_KINDS, plan_threats, schedule_threats
from .traffic import traffic_server

__all__ = ["HARD_CASE_KINDS", "SIZES", "THREAT_KINDS", "OrgLog", "draw_spec", "generate_org", "generate_orgs"]

log = logging.getLogger(__name__)

_AUDIT = "audit.log"
_LABELS = "labels.json"
_SPEC = "spec.json"
_META = "meta.json"  # written last: its presence marks a complete cache entry


@dataclass(frozen=True)
class OrgLog:
    """One generated organisation on disk (see the module docstring for the file formats)."""

    audit_path: Path
    labels_path: Path
    spec_path: Path
    spec_hash: str
    stats: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, list[dict[str, Any]]]:
        """The parsed labels file."""
        data: dict[str, list[dict[str, Any]]] = json.loads(self.labels_path.read_text())
        return data

    def label_index(self) -> dict[str, tuple[str, str, str]]:
        """Request id -> (``threats`` or ``benign_hard_cases``, instance, kind), for scoring."""
        index: dict[str, tuple[str, str, str]] = {}
        for section, items in self.labels().items():
            for item in items:
                for rid in item["request_ids"]:
                    index[rid] = (section, item["instance"], item["kind"])
        return index


def draw_spec(seed: int, size: str | None = None, days: int | None = None) -> OrgSpec:
    """The full deployment spec of ``seed``: layout, identities, hard cases and planned threats."""
    return plan_threats(draw_layout(seed, size, days))


def generate_org(seed: int, *, size: str | None = None, days: int | None = None, workdir: Path) -> OrgLog:
    """Generate (or reuse from ``workdir/<spec_hash>/``) the organisation of ``seed``.

    Starts one real OpenBao dev server, drives the organisation's life and its threats through
    it, rewrites the audit log onto the simulated clock and writes labels and spec beside it.
    """
    spec = draw_spec(seed, size, days)
    digest = spec_hash(spec)
    out = Path(workdir) / digest
    cached = _cached(out, digest)
    if cached is not None:
        return cached
    tmp = Path(workdir) / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        stats = _generate(spec, tmp)
        (tmp / _SPEC).write_text(json.dumps(asdict(spec), indent=1, sort_keys=True))
        (tmp / _META).write_text(json.dumps({"spec_hash": digest, **stats}, indent=1, sort_keys=True))
        if _cached(out, digest) is None:  # else another process finished the same spec first
            shutil.rmtree(out, ignore_errors=True)  # an incomplete leftover
            try:
                tmp.rename(out)
            except OSError:
                if _cached(out, digest) is None:
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _cached(out, digest)
    if result is None:
        raise DriverError(f"generated organisation {digest} is incomplete")
    return result


def generate_orgs(
    seeds: Sequence[int],
    *,
    size: str | None = None,
    days: int | None = None,
    workdir: Path,
    workers: int = 2,
) -> list[OrgLog]:
    """:func:`generate_org` for each seed, ``workers`` at a time (one server each), in seed order.

    Each organisation's requests run one after another, so a second worker uses the second core.
    """
    if workers <= 1 or len(seeds) <= 1:
        return [generate_org(seed, size=size, days=days, workdir=workdir) for seed in seeds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(generate_org, seed, size=size, days=days, workdir=workdir) for seed in seeds]
        return [f.result() for f in futures]


def _cached(out: Path, digest: str) -> OrgLog | None:
    meta = out / _META
    if not meta.exists():
        return None
    stats = json.loads(meta.read_text())
    return OrgLog(out / _AUDIT, out / _LABELS, out / _SPEC, digest, stats)


def _generate(spec: OrgSpec, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    server_dir = tmp / "server"
    server, url = traffic_server(server_dir)
    rng = random.Random(f"vaultwatch-life:{spec.seed}:{spec.size}:{spec.days}")
    with server:
        driver = Driver(url, server.root_token, now=spec.t0 - DAY, rng=rng)
        driver.unseal_key = server.unseal_key()
        try:
            org = Org(spec, driver)
            org.setup()
            org.plan_benign()
            schedule_threats(org)
            org.run()
        finally:
            driver.close()
    rewritten = driver.rewrite(server.audit_log, tmp / _AUDIT, setup_ts=spec.t0 - DAY + 15 * 3600)
    shutil.rmtree(server_dir, ignore_errors=True)
    labels: dict[str, list[dict[str, Any]]] = {"threats": [], "benign_hard_cases": []}
    for inst in org.labelled.values():
        rids = rewritten.ids_by_tag.get(inst.instance, [])
        if not rids and not inst.threat:
            continue
        first = rewritten.first_ts.get(inst.instance, inst.planned_ts)
        extra = dict(inst.extra)
        seq = extra.pop("trigger_seq", None)
        if seq is not None:
            rid = rewritten.rid_by_seq.get(int(seq))
            extra["trigger"] = rids.index(rid) if rid in rids else 0
        elif inst.threat and extra.get("single_event"):
            extra["trigger"] = 0
        if "due_time" in extra:
            extra["due_time"] = rfc3339(float(extra["due_time"]))
            first = inst.planned_ts
        item = {
            "instance": inst.instance,
            "kind": inst.kind,
            "target": inst.target,
            "request_ids": rids,
            "first_time": rfc3339(first),
            **extra,
        }
        labels["threats" if inst.threat else "benign_hard_cases"].append(item)
    (tmp / _LABELS).write_text(json.dumps(labels, indent=1))
    return {
        "seed": spec.seed,
        "size": spec.size,
        "days": spec.days,
        "learning_days": spec.learning_days,
        "sim_start": rfc3339(spec.t0),
        "identities": spec.identity_count(),
        "requests": rewritten.requests,
        "entries": rewritten.entries,
        "unmatched": rewritten.unmatched,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m vaultwatch.demo.orgs SEED [SIZE] [WORKDIR]``: generate one organisation."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO)
    seed = int(args[0]) if args else 1
    size = args[1] if len(args) > 1 else None
    workdir = Path(args[2]) if len(args) > 2 else Path("var/eval")
    org = generate_org(seed, size=size, workdir=workdir)
    print(json.dumps({"audit_path": str(org.audit_path), **org.stats}, indent=1))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
