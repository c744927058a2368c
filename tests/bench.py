"""``make bench``: run benchmark sections and print their side-by-side figures.

``python -m tests.bench all`` runs every section; ``python -m tests.bench extract``
(or storage, crawl, backfill, search, export) runs one. Each section lives in
``tests/bench_<name>.py`` and exposes ``main() -> None``. Figures are for comparison
within one run: absolute times on a shared 2-core machine drift by ±30%
(docs/performance.md).
"""

from __future__ import annotations

import importlib
import sys
import time

SECTIONS = ("extract", "storage", "crawl", "backfill", "search", "export")


def run(names: list[str]) -> int:
    for name in names:
        try:
            module = importlib.import_module(f"tests.bench_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.bench_{name}":
                raise
            print(f"\n== {name}: no benchmark yet (tests/bench_{name}.py)")
            continue
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        module.main()
        print(f"   ({name} section took {time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:] or ["all"]
    if args == ["all"]:
        args = list(SECTIONS)
    unknown = [a for a in args if a not in SECTIONS]
    if unknown:
        sys.exit(f"unknown section {unknown[0]!r}: choose from all, {', '.join(SECTIONS)}")
    sys.exit(run(args))
