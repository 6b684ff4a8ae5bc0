"""Benchmark rows as the bench/*.sh scripts print them (op variant size run seconds
extra-json, one per line), shared by the report scripts."""
import json
from collections import defaultdict


def read(lines):
    """The rows of `lines` as dicts (op, variant, size_mib, run, seconds, extra fields)."""
    rows = []
    for line in lines:
        if not line.strip():
            continue
        op, variant, size, run, seconds, extra = line.split(" ", 5)
        rows.append({"op": op, "variant": variant, "size_mib": int(size), "run": int(run),
                     "seconds": float(seconds), **json.loads(extra)})
    return rows


def grouped(rows):
    """Rows by (op, variant, size_mib)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["variant"], r["size_mib"])].append(r)
    return groups
