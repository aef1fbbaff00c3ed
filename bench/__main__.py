"""Run every benchmark module in this package (``bench_*.py``) in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    only = sys.argv[1:]
    for name in names:
        if only and name not in only:
            continue
        print(f"== {name}")
        mod = importlib.import_module(f"bench.{name}")
        mod.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
