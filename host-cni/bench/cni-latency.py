#!/usr/bin/env python3
"""ADD and DEL latency of `hereabouts` against Debian's `host-local`, called the same way.

Every CNI call is a fresh process, so what a runtime waits for is process start + config
parse + store I/O + the answer. This drives both plugins exactly as a runtime does (CNI_*
environment, network config on stdin, one process per call), interleaving the calls
(ADD hereabouts, ADD host-local, ...) so machine noise hits both alike, and prints
min / median / p99 per verb and the ratio of the medians. `/bin/true` spawned the same way
shows the floor: the cost of starting any process from here.

usage: host-cni/bench/cni-latency.py [--calls N] [--hereabouts BIN] [--host-local BIN] [--dir D] [--full]
Both stores live in a fresh directory under D (default: the system temp directory; pass
/dev/shm to take the disk, and so hereabouts' fsyncs, out of the comparison). The hereabouts
component cache is warmed by one call first, as on any node after its first pod.
--full adds hereabouts with its SQLite store at `synchronous = FULL` (an fsync of the WAL per
commit; HEREABOUTS_SQLITE_SYNCHRONOUS=full) to the same run, on its own store.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed_answer(binary, config, verb, container, extra_env=None):
    """One CNI call as a runtime makes it: (milliseconds, the JSON answer or None)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": "/var/run/netns/bench",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": os.path.dirname(binary),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container}",
        **(extra_env or {}),
    }
    started = time.perf_counter()
    done = subprocess.run([binary], input=config, env=env, capture_output=True)
    elapsed = (time.perf_counter() - started) * 1e3
    if done.returncode != 0 and verb != "TRUE":
        sys.exit(f"{binary} {verb} {container} failed ({done.returncode}): {done.stdout[:300]!r} {done.stderr[:300]!r}")
    return elapsed, (json.loads(done.stdout) if done.stdout.strip() else None)


def call(binary, config, verb, container, extra_env=None):
    return timed_answer(binary, config, verb, container, extra_env)[0]


def summary(samples):
    xs = sorted(samples)
    p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
    return xs[0], statistics.median(xs), p99


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per plugin and verb (default 300)")
    parser.add_argument("--hereabouts", default=os.path.join(ROOT, "target/release/hereabouts"))
    parser.add_argument("--host-local", default="/usr/lib/cni/host-local")
    parser.add_argument("--dir", default=None, help="where the stores live (default: system temp dir)")
    parser.add_argument("--full", action="store_true", help="also hereabouts at SQLite synchronous=FULL")
    args = parser.parse_args()
    for binary in (args.hereabouts, args.host_local):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary}: not found (build with cargo build --release; apt-get install containernetworking-plugins)")

    work = tempfile.mkdtemp(prefix="cni-latency-", dir=args.dir)
    try:
        # The same /16 for both; each config in the version runtimes send today.
        ours = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                           "ipam": {"type": "hereabouts", "range": "10.77.0.0/16", "data_dir": f"{work}/hereabouts"}}).encode()
        theirs = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.78.0.0/16"}]], "dataDir": f"{work}/host-local"}}).encode()
        plugins = [("hereabouts", args.hereabouts, ours, {}), ("host-local", args.host_local, theirs, {})]
        if args.full:
            full = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                               "ipam": {"type": "hereabouts", "range": "10.77.0.0/16", "data_dir": f"{work}/hereabouts-full"}}).encode()
            plugins.insert(1, ("hereabouts-full", args.hereabouts, full, {"HEREABOUTS_SQLITE_SYNCHRONOUS": "full"}))
        for _, binary, config, extra in plugins:  # warm-up: page cache, component cache
            call(binary, config, "ADD", "warm-up", extra)
            call(binary, config, "DEL", "warm-up", extra)

        results = {(name, verb): [] for name, _, _, _ in plugins for verb in ("ADD", "DEL")}
        floor = []
        for verb in ("ADD", "DEL"):
            for i in range(args.calls):
                for name, binary, config, extra in plugins:
                    results[(name, verb)].append(call(binary, config, verb, f"ctr-{i:05d}", extra))
                if verb == "ADD":
                    floor.append(call("/bin/true", b"", "TRUE", "x"))

        print(f"{args.calls} calls per plugin and verb, fresh process each, interleaved; stores in {work}; ms")
        print(f"{'plugin':<16} {'verb':<4} {'min':>7} {'median':>7} {'p99':>7}")
        for (name, verb), samples in results.items():
            lo, med, p99 = summary(samples)
            print(f"{name:<16} {verb:<4} {lo:7.2f} {med:7.2f} {p99:7.2f}")
        lo, med, p99 = summary(floor)
        print(f"{'/bin/true':<16} {'-':<4} {lo:7.2f} {med:7.2f} {p99:7.2f}   (spawn floor)")
        for name in [n for n, _, _, _ in plugins if n != "host-local"]:
            for verb in ("ADD", "DEL"):
                ratio = statistics.median(results[(name, verb)]) / statistics.median(results[("host-local", verb)])
                print(f"{verb} median ratio {name} / host-local: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
