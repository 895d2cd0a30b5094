"""Run benchmark groups, print a table, write JSON records.

    python -m benchmarks                 # every group
    python -m benchmarks io segment      # named groups
    python -m benchmarks io --json out.json

Each group is a module ``benchmarks/bench_<group>.py`` with ``run(args) -> list[Record]``, plus any
``benchmarks/bench_<group>_<part>.py`` modules of the same form (run after it, in name order).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

GROUPS = ["io", "segment", "interactive", "gui", "session", "classify", "seg_adapters", "distributed"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("groups", nargs="*", help=f"groups to run (default: all of {', '.join(GROUPS)})")
    p.add_argument("--json", type=Path, default=None, help="write the records to this JSON file")
    p.add_argument("--quick", action="store_true", help="fewer repeats / smaller sizes (smoke run)")
    args = p.parse_args(argv)
    groups = args.groups or GROUPS
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {unknown}; choose from {GROUPS}")

    records, failed = [], []
    for g in groups:
        for name in _group_modules(g):
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name == name:
                    print(f"[{g}] {name} not implemented yet, skipped", file=sys.stderr)
                    continue
                raise
            print(f"[{g}] running {name} ...", file=sys.stderr, flush=True)
            try:
                records.extend(mod.run(args))
            except Exception:
                traceback.print_exc()
                failed.append(g)

    _print_table(records)
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in records], indent=2))
        print(f"wrote {len(records)} records to {args.json}", file=sys.stderr)
    return 1 if failed else 0


def _group_modules(group: str) -> list[str]:
    """``benchmarks.bench_<group>`` and any ``benchmarks/bench_<group>_<part>.py`` beside it."""
    here = Path(__file__).resolve().parent
    parts = sorted(p.stem for p in here.glob(f"bench_{group}_*.py"))
    return [f"benchmarks.bench_{group}"] + [f"benchmarks.{p}" for p in parts]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _print_table(records) -> None:
    cols = ["benchmark", "metric", "value", "unit", "baseline", "ratio", "device", "notes"]
    rows = [[_fmt(getattr(r, c)) for c in cols] for r in records]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    sys.exit(main())
