"""The streaming service: everything ``vaultwatch run`` wires together, and the replay loop.

* :mod:`.wiring` builds the service from :class:`~vaultwatch.settings.Settings`: store, archive,
  router, Kafka source, worker and the periodic tasks.
* :mod:`.worker` is the Kafka → detection → alert store → routing loop with exactly-once state.
* :mod:`.cross` is the cross-identity stage (detectors whose state several identities share);
  :mod:`.stage2` is its Kafka plumbing.
* :mod:`.replay` is the one replay loop: recorded events in event-time order → engine → alerts
  (``vaultwatch replay``, the demo's datasets and scenarios all call it); :mod:`.shard` runs it
  over N processes (``replay --jobs N``).
* :mod:`.archive` is the Parquet event archive; :mod:`.atomic` writes outputs that are whole or
  absent; :mod:`.metrics` and :mod:`.ops` are the worker's Prometheus metrics and
  ``/healthz``/``/readyz``/``/metrics`` endpoints; :mod:`.reports` is the report scheduler's
  entry point; :mod:`.summary` accumulates what ``vaultwatch inspect`` reports.

The submodules are imported by name (``from vaultwatch.service.worker import Worker``) so that a
caller loads only what it uses (the archive pulls in pyarrow, the worker the Kafka client). So
the public surface in ``__all__`` is the submodules themselves; importing this package loads none.
"""

__all__ = [
    "archive",
    "atomic",
    "cross",
    "metrics",
    "ops",
    "replay",
    "reports",
    "shard",
    "stage2",
    "summary",
    "wiring",
    "worker",
]
