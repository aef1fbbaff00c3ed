"""The demo: a real OpenBao server, an organisation's traffic with labelled attacks, the whole stack.

Nothing outside this package, the ``vaultwatch demo`` verb, the tests and the benchmarks imports it:
production code never loads the traffic generator or the server launchers.

* :mod:`.servers` — throwaway OpenBao dev servers and a Kafka-protocol broker for demos and tests;
* :mod:`.traffic` — realistic traffic against a real server, on a compressed clock, with labelled attacks;
* :mod:`.scenarios` — scoring detection against that ground truth, naive baselines, the report;
* :mod:`.dataset` — the demo data set (archive, alert store, simulated triage) the notebooks and
  report tests read through :mod:`vaultwatch.report.loaders`;
* :mod:`.stack` — ``vaultwatch demo``: server, broker, shipper, worker and the real API on one machine;
* :mod:`.orgs` — organisations for detection evaluation, driven from a spec drawn from a seed:
  :mod:`.org_spec` draws the spec (pure), :mod:`.org_driver` makes the requests on a simulated
  clock, :mod:`.org_life` plays the organisation's working life and :mod:`.threats` is the
  catalogue of attacks it injects.

The submodules are imported by name (``from vaultwatch.demo.servers import OpenBaoServer``), so the
public surface in ``__all__`` is the submodules themselves; importing this package loads none.
"""

__all__ = [
    "dataset",
    "org_driver",
    "org_life",
    "org_spec",
    "orgs",
    "scenarios",
    "servers",
    "stack",
    "threats",
    "traffic",
]
