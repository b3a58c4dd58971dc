#!/usr/bin/env python3
"""Where one ADD's time goes, step by step, for this build beside an earlier one.

Fresh processes, as runtimes call plugins, interleaved so noise hits every row alike; medians
of N calls. The rows add one cost at a time: process spawn (`/bin/true`), the binary's own
start (`CNI_COMMAND=VERSION`), the component and store opened with nothing written (an
idempotent ADD: same container again), and a new ADD (one commit) on the given directory.
Debian's host-local is timed in the same run on the same directory.

usage: host-cni/bench/add-breakdown.py [--calls N] [--before BIN] [--now BIN] [--dir D]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(argv, env, stdin):
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stdout.decode()} {done.stderr.decode()}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--before", default=None, help="an earlier hereabouts binary, timed beside")
    parser.add_argument("--now", default=os.path.join(ROOT, "target/release/hereabouts"))
    parser.add_argument("--host-local", default="/usr/lib/cni/host-local")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="add-breakdown-", dir=args.dir)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_NETNS": "/var/run/netns/bench",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    rows = [("/bin/true", ["/bin/true"], {}, b"", False)]
    binaries = [("now", args.now)] + ([("before", args.before)] if args.before else [])
    for i, (label, binary) in enumerate(binaries):
        conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                           "ipam": {"type": "hereabouts", "range": f"10.{60 + i}.0.0/16",
                                    "data_dir": f"{work}/{label}"}}).encode()
        rows += [(f"{label}: VERSION", [binary], {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}', False),
                 (f"{label}: idempotent ADD", [binary], {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "same"}, conf, False),
                 (f"{label}: new ADD", [binary], {"CNI_COMMAND": "ADD"}, conf, True)]
    theirs = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.59.0.0/16"}]],
                                  "dataDir": f"{work}/host-local"}}).encode()
    rows.append(("host-local: new ADD", [args.host_local], {"CNI_COMMAND": "ADD"}, theirs, True))
    try:
        for _, argv, extra, stdin, _ in rows:  # warm-up: caches, databases, the idempotent holder
            timed(argv, {**base, "CNI_CONTAINERID": "same", **extra}, stdin)
        samples = {name: [] for name, *_ in rows}
        for call in range(args.calls):
            for name, argv, extra, stdin, fresh in rows:
                env = {**base, "CNI_CONTAINERID": "same", **extra}
                if fresh:
                    env["CNI_CONTAINERID"] = f"c{call}"
                samples[name].append(timed(argv, env, stdin))
        print(f"{args.calls} fresh processes per row, interleaved; {work}; ms")
        print(f"{'row':28} {'min':>7} {'median':>7}")
        for name, values in samples.items():
            print(f"{name:28} {min(values):7.2f} {statistics.median(values):7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
