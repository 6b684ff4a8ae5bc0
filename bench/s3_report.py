"""Turns the S3 benchmark's rows (op variant size run seconds extra-json) into medians and
ratios against the baseline (a local dump plus boto3) of the same size and operation, and
saves rows, medians and ratios as JSON (path given as argv[1])."""
import json
import platform
import statistics
import sys

from rows import grouped, read as read_rows

rows = read_rows(sys.stdin)
groups = {k: [r["seconds"] for r in rs] for k, rs in grouped(rows).items()}
medians = {f"{o}/{v}/{s}": statistics.median(x) for (o, v, s), x in groups.items()}


def label(op, variant):
    if variant == "ours":
        return f"{op}: ours (zstd archive, s3://)"
    if variant == "baseline":
        return ("dump: local dump + boto3 upload" if op == "dump"
                else "restore: boto3 download + restore")
    return f"{op}: ours --streams {variant[len('streams-'):]} (s3://)"


# ours / baseline for every timed variant: what the JSON's readers (and make_bench.rs) use.
ratios = {}
for (op, variant, size) in groups:
    base = medians.get(f"{op}/baseline/{size}")
    if variant != "baseline" and base:
        ratios[f"{op}/{variant}/{size}"] = round(medians[f"{op}/{variant}/{size}"] / base, 3)

print(f"\n{'size':>6} {'operation (one S3 server for all)':<40} {'median s':>9} {'ratio':>7}")
for (op, variant, size) in sorted(groups):
    s = medians[f"{op}/{variant}/{size}"]
    base = medians.get(f"{op}/baseline/{size}")
    ratio = f"{s / base:.2f}x" if base else "-"
    print(f"{size:>5}M {label(op, variant):<40} {s:>9.2f} {ratio:>7}")
print("ratios: against the baseline of the same size and operation, same run, same server")

with open(sys.argv[1], "w") as f:
    json.dump({"host": platform.node(), "kernel": platform.release(), "rows": rows,
               "medians": medians, "ratios": ratios}, f, indent=2)
print(f"saved {sys.argv[1]}")
