"""Turns benchmark rows (op variant size run seconds extra-json) into a table of medians
and ratios, and saves all rows and medians as JSON (path given as argv[1])."""
import json
import platform
import statistics
import sys

from rows import grouped, read as read_rows

rows = read_rows(sys.stdin)
groups = grouped(rows)

def med(key, rs):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else None

medians = {}
for (op, variant, size), rs in sorted(groups.items()):
    medians[f"{op}/{variant}/{size}"] = {k: med(k, rs) for k in
        ("seconds", "archive_bytes", "image_bytes", "peak_rss_kib", "written_bytes")}

def m(op, variant, size, key="seconds"):
    return medians.get(f"{op}/{variant}/{size}", {}).get(key)

print(f"\n{'size':>6} {'operation':<34} {'median s':>9} {'ratio':>7} {'archive MB':>11} {'peak RSS MiB':>13}")
for size in sorted({r["size_mib"] for r in rows}):
    base_dump, base_restore = m("dump", "podman", size), m("restore", "baseline", size)
    streamed = sorted({r["variant"] for r in rows if r["variant"].startswith("streams-")})
    before = sorted({r["variant"] for r in rows if r["variant"].startswith("before-streams-")})
    lines = [
        ("dump: ours, default (streamed)", "dump", "default", base_dump),
        ("dump: ours (zstd archive)", "dump", "ours", base_dump),
        *[(f"dump: ours --streams {v[8:]}", "dump", v, base_dump) for v in streamed],
        ("dump: criu + tar|zstd -3 (podman)", "dump", "podman", base_dump),
        ("dump: raw criu to a directory", "dump", "raw-criu", base_dump),
        ("restore: ours, default (streamed)", "restore", "default", base_restore),
        ("restore: ours (archive)", "restore", "ours", base_restore),
        *[(f"restore: ours --streams {v[8:]}", "restore", v, base_restore) for v in streamed],
        ("restore: zstd -d|tar x + criu", "restore", "baseline", base_restore),
        ("restore: raw criu from a directory", "restore", "raw-criu", base_restore),
        # BENCH_COMPARE_BIN: the same with another build (before/after in one run).
        ("dump: before, default", "dump", "before-default", base_dump),
        ("dump: before (zstd archive)", "dump", "before-ours", base_dump),
        *[(f"dump: before --streams {v[15:]}", "dump", v, base_dump) for v in before],
        ("restore: before, default", "restore", "before-default", base_restore),
        ("restore: before (archive)", "restore", "before-ours", base_restore),
        *[(f"restore: before --streams {v[15:]}", "restore", v, base_restore) for v in before],
    ]
    for label, op, variant, base in lines:
        s = m(op, variant, size)
        if s is None:
            continue
        ratio = f"{s / base:.2f}x" if base else "-"
        ab = m(op, variant, size, "archive_bytes")
        rss = m(op, variant, size, "peak_rss_kib")
        print(f"{size:>5}M {label:<34} {s:>9.2f} {ratio:>7} "
              f"{(f'{ab / 1e6:.1f}' if ab else '-'):>11} {(f'{rss / 1024:.0f}' if rss else '-'):>13}")
print("ratios: against the podman-way dump and the baseline restore of the same size, same run")
for size in sorted({r["size_mib"] for r in rows}):
    ours, raw = m("restore", "default", size), m("restore", "raw-criu", size)
    if ours and raw:
        print(f"{size:>5}M restore: ours, default / raw criu (the floor): {ours / raw:.2f}x")

out = {"host": platform.node(), "kernel": platform.release(), "rows": rows, "medians": medians}
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=2)
print(f"saved {sys.argv[1]}")
