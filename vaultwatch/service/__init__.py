"""The streaming service: everything ``vaultwatch run`` wires together, and the replay loop.

* :mod:`.wiring` builds the service from :class:`~vaultwatch.settings.Settings`: store, archive,
  router, Kafka source, worker and the periodic tasks.
* :mod:`.worker` is the Kafka → detection → alert store → routing loop with exactly-once state.
* :mod:`.replay` is the one replay loop: recorded events in event-time order → engine → alerts
  (``vaultwatch replay``, the demo's datasets and scenarios all call it).
* :mod:`.archive` is the Parquet event archive; :mod:`.metrics` and :mod:`.ops` are the worker's
  Prometheus metrics and ``/healthz``/``/readyz``/``/metrics`` endpoints; :mod:`.summary`
  accumulates what ``vaultwatch inspect`` reports.

The submodules are imported by name (``from vaultwatch.service.worker import Worker``) so that a
caller loads only what it uses (the archive pulls in pyarrow, the worker the Kafka client).
"""
