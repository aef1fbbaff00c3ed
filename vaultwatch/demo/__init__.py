"""The demo: a real OpenBao server, an organisation's traffic with labelled attacks, the whole stack.

Nothing outside this package, the ``vaultwatch demo`` verb, the tests and the benchmarks imports it:
production code never loads the traffic generator or the server launchers.

* :mod:`.servers` — throwaway OpenBao dev servers and a Kafka-protocol broker for demos and tests;
* :mod:`.traffic` — realistic traffic against a real server, on a compressed clock, with labelled attacks;
* :mod:`.scenarios` — scoring detection against that ground truth, naive baselines, the report;
* :mod:`.dataset` — the demo data set (archive, alert store, simulated triage) the notebooks and
  report tests read through :mod:`vaultwatch.report.loaders`;
* :mod:`.stack` — ``vaultwatch demo``: server, broker, shipper, worker and the real API on one machine.

The submodules are imported by name (``from vaultwatch.demo.servers import OpenBaoServer``).
"""
