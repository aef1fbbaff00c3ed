"""Run every benchmark module in this package (``bench_*.py``) in turn, then print issue 17's table.

Each module's ``rows()`` measures and returns its lines of the table (:class:`bench.common.Row`);
a figure that cannot be measured here is a row saying why, never a number. ``python -m bench
bench_parse bench_replay`` runs only the modules named; ``--list`` names them. Each row of the
table carries the 1-minute load average at the time it was measured (the machine is shared).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

import bench
from bench.common import Row, load_average, print_table

#: The modules that measure issue 17's table, in its order.
TABLE_MODULES = ("bench_parse", "bench_replay", "bench_run")


def main(argv: list[str] | None = None) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Issue 17's benchmarks: every figure a ratio to a baseline measured in the same run.",
    )
    ap.add_argument("modules", nargs="*", metavar="MODULE", help=f"run only these ({', '.join(names)})")
    ap.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(f"{n}{'  (issue 17 table)' if n in TABLE_MODULES else ''}" for n in names))
        return 0
    unknown = sorted(set(args.modules) - set(names))
    if unknown:
        ap.error(f"no benchmark module {', '.join(unknown)} (there are: {', '.join(names)})")
    only = args.modules
    rows: list[Row] = []
    print(f"== {load_average()}")
    for name in sorted(
        names, key=lambda n: (n not in TABLE_MODULES, TABLE_MODULES.index(n) if n in TABLE_MODULES else 0, n)
    ):
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        mod = importlib.import_module(f"bench.{name}")
        if hasattr(mod, "rows"):
            try:
                rows += mod.rows()
            except Exception as exc:  # one module's failure leaves the others' rows
                traceback.print_exc()
                rows += mod.failed_rows(f"{type(exc).__name__}: {exc}")
        else:
            mod.main()
    if rows:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
