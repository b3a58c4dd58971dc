#!/usr/bin/env python3
"""ADD latency against the pool's size: the earlier file store against the SQLite store.

Every CNI call is a fresh process. The file store read and rewrote the whole pool file on every
ADD, so its ADD grew with the pool (4.1 / 21 / 133 ms at 1,000 / 10,000 / 60,000 allocations);
the SQLite store reads the query's slots through an index and the core's summary, so the goal
is the 60,000 pool within 2x of the 1,000 pool.

For each size, both binaries get a data directory holding the same pool in the earlier JSON
format (10.0.0.0/16 with offsets 1..N allocated): the old binary uses it as is, the new one
imports it on its first call. One warm-up ADD each (the component cache; for the new store the
import and the core's first summary), then ADDs of new containers interleaved old/new so noise
hits both alike; both must hand out the same address every time.

usage: host-cni/bench/pool-size.py --old BIN [--calls N] [--new BIN] [--sizes 1000,10000,60000] [--dir D]
D must be a real disk (default: the system temp directory; ext4 on our machines), not tmpfs.
"""
import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
_spec = importlib.util.spec_from_file_location("cni_latency", os.path.join(HERE, "cni-latency.py"))
cni_latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cni_latency)

# The earlier store's figures for this benchmark (docs/benchmarks.md), ms.
BASELINE = {1000: 4.1, 10000: 21.0, 60000: 133.0}


def write_json_pool(data_dir, size):
    """pools/10.0.0.0-16.json exactly as the earlier file store wrote it (padded to 4 KiB)."""
    pool = {"version": size, "range": "10.0.0.0/16", "network_name": "",
            "allocations": {str(i): {"id": f"pre-{i}", "ifname": "eth0", "podref": f"bench/pre-{i}"}
                            for i in range(1, size + 1)}}
    text = json.dumps(pool, separators=(",", ":")).encode() + b"\n"
    text += b" " * (-len(text) % 4096)
    os.makedirs(os.path.join(data_dir, "pools"))
    with open(os.path.join(data_dir, "pools", "10.0.0.0-16.json"), "wb") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="ADDs per binary and size (default 100)")
    parser.add_argument("--old", required=True, help="a build with the earlier file store (e.g. the previous release)")
    parser.add_argument("--new", default=os.path.join(ROOT, "target/release/hereabouts"))
    parser.add_argument("--sizes", default="1000,10000,60000")
    parser.add_argument("--dir", default=None, help="where the stores live (default: system temp dir)")
    args = parser.parse_args()
    for binary in (args.old, args.new):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary}: not found")
    sizes = [int(s) for s in args.sizes.split(",")]
    medians = {}
    print(f"{args.calls} ADDs per binary and size, fresh process each, interleaved; ms")
    print(f"{'allocations':>11} {'old median':>10} {'old p99':>8} {'new median':>10} {'new p99':>8} {'old/new':>8}  (old baseline)")
    for size in sizes:
        work = tempfile.mkdtemp(prefix="pool-size-", dir=args.dir)
        try:
            configs = {}
            for name in ("old", "new"):
                data_dir = os.path.join(work, name)
                write_json_pool(data_dir, size)
                configs[name] = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                                            "ipam": {"type": "hereabouts", "range": "10.0.0.0/16",
                                                     "data_dir": data_dir}}).encode()
            binaries = {"old": args.old, "new": args.new}
            for name in ("old", "new"):  # warm-up: component cache; the new store's import
                cni_latency.call(binaries[name], configs[name], "ADD", "warm-up")
            samples = {"old": [], "new": []}
            for i in range(args.calls):
                told = {}
                for name in ("old", "new"):
                    elapsed, answer = cni_latency.timed_answer(binaries[name], configs[name], "ADD", f"ctr-{i:05d}")
                    samples[name].append(elapsed)
                    told[name] = answer["ips"][0]["address"]
                if told["old"] != told["new"]:
                    sys.exit(f"ADD ctr-{i:05d}: old store gave {told['old']}, new {told['new']}")
            old, new = (cni_latency.summary(samples[n]) for n in ("old", "new"))
            medians[size] = (old[1], new[1])
            base = BASELINE.get(size)
            print(f"{size:>11} {old[1]:10.2f} {old[2]:8.2f} {new[1]:10.2f} {new[2]:8.2f} {old[1] / new[1]:8.1f}"
                  f"  ({base} ms)" if base else "")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for i, name in enumerate(("old", "new")):
            print(f"{name}: {large} allocations / {small}: {medians[large][i] / medians[small][i]:.2f}x")


if __name__ == "__main__":
    main()
