#!/usr/bin/env python3
"""The `hereabouts` CNI plugin over etcd, one process per call as a runtime calls it.

usage: cni.py BIN ENDPOINT CTL   (CTL: script taking stop/start for that etcd; run.sh makes it)

- contention: 8 "nodes" each run 200 ADDs (8 processes at any moment): 1,600 distinct addresses,
  the lowest 1,600 of the /20; then DELs leave the pool empty.
- faults: ADD processes killed with SIGKILL at random moments, etcd stopped and restarted
  mid-run: error 11 while it is down, success after; every ADD the runtime did not see succeed
  is DELed (as runtimes do); in the end the pool holds exactly the containers that got an
  address, each once.
- kill test: runtimes ADD containers, each ADD a process, SIGKILL a third of them at a random
  instant and tear half of those down at once; after a DEL of every container id nothing is
  stranded (pool and reservations empty, a fresh fill gets every address), and etcd's own
  history shows no address handed to a second holder without a release in between.
- bad data: a foreign value in the pool → error 5 naming the key for the call that reads it,
  the store unchanged; an ADD of another container does not read it and succeeds.
- GC keeps only the listed attachments; CHECK; STATUS is 50 when etcd is unreachable.
- `hereabouts status`: the pool counted (golden JSON) and `--who` naming the holder.
- node slices (`node_slice_size`): "nodes" (NODENAME) claim the lowest free slice, lowest
  first, and allocate lowest-free inside it; N nodes claiming at once never share a slice
  and no node gets two; every slice taken is error 100; `slices release` frees an empty claim,
  keeps one whose pool holds addresses; a freed slice goes to the next new node; a re-cut
  network leaves the old claims stale, blocks the slices they overlap, and DEL still finds
  the old addresses.
Prints one line per check and exits non-zero if any failed.

usage: cni.py BIN ENDPOINT CTL [TEST...]   (TEST: a function below, e.g. node_slices; default all)
"""
import ipaddress
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

BIN, ENDPOINT, CTL = sys.argv[1:4]
RUN = f"{os.getpid()}-{int(time.time())}"
failures = []


def check(name, ok, detail=""):
    print(("ok: " if ok else "FAILED: ") + name + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def conf(prefix, rng):
    return json.dumps({"cniVersion": "1.0.0", "name": "etcdnet", "type": "bridge",
                       "ipam": {"type": "hereabouts", "range": rng, "etcd_host": ENDPOINT,
                                "etcd_prefix": prefix, "etcd_dial_timeout": "1s",
                                "etcd_request_timeout": "2s"}})


def env(command, cid):
    e = dict(os.environ)
    e.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{cid}",
              "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
              "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}"})
    return e


def call(command, cid, config, node=None):
    e = env(command, cid)
    if node is not None:
        e["NODENAME"] = node
    p = subprocess.run([BIN], input=config, env=e, capture_output=True, text=True, timeout=60)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else {}
    except json.JSONDecodeError:
        out = {"code": -1, "msg": p.stdout}
    return p.returncode, out


def address(out):
    return out["ips"][0]["address"].split("/")[0]


def etcdctl(*args):
    return subprocess.run(["etcdctl", "--endpoints", ENDPOINT, *args], env={**os.environ, "ETCDCTL_API": "3"},
                          capture_output=True, text=True, check=True).stdout


def allocations(prefix, pool):
    """offset → container id, straight from etcd."""
    out = etcdctl("get", "--prefix", f"{prefix}pools/{pool}/alloc/")
    lines = out.splitlines()
    return {k.rsplit("/", 1)[1]: json.loads(v)["id"] for k, v in zip(lines[0::2], lines[1::2])}


def lowest(rng, n):
    net = ipaddress.ip_network(rng)
    got = []
    for a in net.hosts():
        if a.packed[-1] == 0:
            continue
        got.append(str(a))
        if len(got) == n:
            break
    return got


def contention():
    prefix, rng = f"/hereabouts-cni/{RUN}/contention/", "10.40.0.0/20"
    config = conf(prefix, rng)
    got, errors = {}, []

    def node(n):
        for i in range(200):
            cid = f"node{n}-{i}"
            rc, out = call("ADD", cid, config)
            if rc == 0:
                got[cid] = address(out)
            else:
                errors.append((cid, out))

    t0 = time.time()
    threads = [threading.Thread(target=node, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.time() - t0
    check("contention: 1,600 ADDs from 8 parallel nodes succeed", not errors and len(got) == 1600,
          f"{len(got)} ok, errors {errors[:2]}, {wall:.1f} s, {1600 / wall:.0f} ADD/s")
    addrs = set(got.values())
    check("contention: 1,600 distinct addresses", len(addrs) == 1600, f"{len(addrs)} distinct")
    check("contention: the lowest 1,600 allocatable", addrs == set(lowest(rng, 1600)))
    stored = allocations(prefix, "10.40.0.0-20")
    check("contention: etcd holds exactly them", len(stored) == 1600 and set(stored.values()) == set(got))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda cid: call("DEL", cid, config)[0], list(got)))
    check("contention: every DEL succeeds", all(rc == 0 for rc in results))
    check("contention: the pool is empty after the DELs", allocations(prefix, "10.40.0.0-20") == {})
    rc, _ = call("DEL", "node0-0", config)
    check("contention: a second DEL succeeds", rc == 0)


def faults():
    prefix, rng = f"/hereabouts-cni/{RUN}/faults/", "10.41.0.0/22"
    config = conf(prefix, rng)
    rnd = random.Random(os.getpid())
    lock = threading.Lock()
    succeeded, unknown, elevens = {}, set(), []
    down = threading.Event()

    def runtime(n):
        """A node's runtime: ADDs one container after another; retries 11; a killed ADD is DELed."""
        for i in range(40):
            cid = f"f{n}-{i}"
            while True:
                p = subprocess.Popen([BIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env("ADD", cid), text=True)
                if rnd.random() < 0.08:  # kill -9 at a random moment
                    time.sleep(rnd.random() * 0.02)
                    p.kill()
                    p.communicate(config)
                    with lock:
                        unknown.add(cid)
                    break
                out, _ = p.communicate(config)
                out = json.loads(out) if out.strip() else {}
                if p.returncode == 0:
                    with lock:
                        succeeded[cid] = address(out)
                    break
                with lock:
                    elevens.append((cid, out.get("code"), down.is_set(), out.get("msg", "")))
                if out.get("code") != 11:
                    break
                time.sleep(0.1)

    threads = [threading.Thread(target=runtime, args=(n,)) for n in range(6)]
    [t.start() for t in threads]
    # Stop etcd mid-run: once the runtimes are well under way (not after a fixed time, which a
    # loaded machine can outrun or lag behind).
    deadline = time.time() + 60
    while len(succeeded) < 40 and time.time() < deadline:
        time.sleep(0.05)
    subprocess.run(["bash", CTL, "stop"], check=True)
    down.set()
    t0 = time.time()
    rc, out = call("ADD", "probe-down", config)
    waited = time.time() - t0
    check("faults: ADD with etcd down is error 11", rc != 0 and out.get("code") == 11,
          f"{waited * 1000:.0f} ms: {out.get('msg', '')[:120]}")
    check("faults: ... within the dial timeout", waited < 2.0, f"{waited:.2f} s")
    # Down for at least 2 s, and until the runtimes have met the outage (bounded).
    t_down = time.time()
    while time.time() - t_down < 2 or (not elevens and time.time() - t_down < 20):
        time.sleep(0.05)
    down.clear()
    subprocess.run(["bash", CTL, "start"], check=True)
    [t.join() for t in threads]
    others = [e for e in elevens if e[1] != 11]
    check("faults: only error 11 while etcd was down, and some", not others and len(elevens) > 0,
          f"{len(elevens)} × 11, others: {others[:2]}")

    # The runtime DELs the ADDs it never saw finish (killed): as kubelet does after a failure.
    for cid in sorted(unknown):
        rc, out = call("DEL", cid, config)
        check(f"faults: DEL of killed {cid}", rc == 0, json.dumps(out)) if rc else None
    stored = allocations(prefix, "10.41.0.0-22")
    holders = list(stored.values())
    check("faults: no container holds two addresses", len(holders) == len(set(holders)))
    check("faults: the pool holds exactly the containers that got an address",
          set(holders) == set(succeeded),
          f"{len(succeeded)} succeeded, {len(unknown)} killed, extra {set(holders) - set(succeeded)}, "
          f"missing {set(succeeded) - set(holders)}")
    by_cid = {cid: str(ipaddress.ip_network(rng).network_address + int(off)) for off, cid in stored.items()}
    check("faults: each at the address it was told", all(by_cid.get(c) == a for c, a in succeeded.items()))


def bad_data():
    prefix, rng = f"/hereabouts-cni/{RUN}/bad/", "10.42.0.0/24"
    config = conf(prefix, rng)
    rc, _ = call("ADD", "good", config)
    key = f"{prefix}pools/10.42.0.0-24/alloc/1"
    etcdctl("put", key, '{"id":"good","ifname":"eth0","pod')
    before = etcdctl("get", "--prefix", prefix)
    rc, out = call("DEL", "good", config)
    # DEL always lets the pod go (docs/semantics.md): it logs the damage and succeeds.
    check("bad data: the DEL of a truncated allocation succeeds (DEL never keeps a pod stuck)",
          rc == 0, json.dumps(out)[:160])
    check("bad data: ... and changes nothing", etcdctl("get", "--prefix", prefix) == before)
    rc, out = call("ADD", "next", config)
    check("bad data: an ADD of another container does not read it, and succeeds",
          rc == 0 and address(out) == "10.42.0.2", json.dumps(out)[:160])
    check("bad data: ... leaving it as it was", etcdctl("get", "--print-value-only", key).strip()
          == '{"id":"good","ifname":"eth0","pod')


def revision():
    return json.loads(etcdctl("get", "/", "-w", "json"))["header"]["revision"]


def history_reader(prefix, rev):
    """etcdctl watch from `rev` on: (PUT|DELETE, key, value) records as they come."""
    p = subprocess.Popen(["etcdctl", "--endpoints", ENDPOINT, "watch", "--prefix", prefix, f"--rev={rev}"],
                         env={**os.environ, "ETCDCTL_API": "3"}, stdout=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()

    def finish():
        sentinel = f"{prefix}~end-of-history"
        etcdctl("put", sentinel, "end")
        deadline = time.time() + 30
        while time.time() < deadline and not any(l.rstrip("\n") == sentinel for l in lines):
            time.sleep(0.05)
        p.kill()
        records = [tuple(l.rstrip("\n") for l in lines[i:i + 3]) for i in range(0, len(lines) - 2, 3)]
        return [r for r in records if r[1] != sentinel]
    return finish


def kill_test():
    prefix, rng = f"/hereabouts-cni/{RUN}/kill/", "10.44.0.0/25"
    config = conf(prefix, rng)
    history = history_reader(prefix, revision() + 1)
    t0 = time.time()
    for i in range(3):
        call("ADD", f"warm-{i}", config)
        call("DEL", f"warm-{i}", config)
    span = (time.time() - t0) / 6
    lock = threading.Lock()
    ids, killed, torn_down, failures_seen = [], set(), [], []

    def runtime(n):
        rnd = random.Random(f"{RUN}-{n}")
        running = []
        for i in range(45):
            cid = f"k{n}-{i}"
            with lock:
                ids.append(cid)
            if rnd.random() < 1 / 3:
                p = subprocess.Popen([BIN], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env("ADD", cid), text=True)
                p.stdin.write(config)
                p.stdin.close()
                time.sleep(rnd.random() * 1.5 * span)
                p.kill()
                p.wait()
                with lock:
                    killed.add(cid)
                if rnd.random() < 0.5:
                    rc, out = call("DEL", cid, config)
                    with lock:
                        (torn_down if rc == 0 else failures_seen).append((cid, out))
                continue
            rc, out = call("ADD", cid, config)
            if rc != 0:
                with lock:
                    failures_seen.append((cid, out))
                continue
            running.append(cid)
            if len(running) > 8:
                old = running.pop(0)
                rc, out = call("DEL", old, config)
                if rc != 0:
                    with lock:
                        failures_seen.append((old, out))

    threads = [threading.Thread(target=runtime, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    check("kill test: every ADD and DEL not killed succeeded", not failures_seen, str(failures_seen[:2]))
    with ThreadPoolExecutor(4) as pool:
        sweep = list(pool.map(lambda cid: call("DEL", cid, config)[0], ids))
    check("kill test: the DEL of every container id succeeds", all(rc == 0 for rc in sweep))
    left = allocations(prefix, "10.44.0.0-25")
    check("kill test: no allocation stranded", left == {}, str(left)[:200])
    reservations = etcdctl("get", "--prefix", "--keys-only", f"{prefix}reservations/").split()
    check("kill test: no reservation stranded", reservations == [], str(reservations[:5]))
    filled = set()
    for i in range(126):
        rc, out = call("ADD", f"fill-{i}", config)
        if rc == 0:
            filled.add(address(out))
    check("kill test: a fresh fill gets every address of the range", filled == set(lowest(rng, 126)),
          f"{len(filled)} of 126")
    rc, out = call("ADD", "one-too-many", config)
    check("kill test: ... and then the range is exhausted (100)", out.get("code") == 100, json.dumps(out)[:160])
    holders, overwrites, puts = {}, [], 0
    for kind, key, value in history():
        if "/alloc/" not in key and "/reservations/" not in key:
            continue
        if kind == "PUT":
            puts += 1
            holder = json.loads(value)["id"]
            if holders.get(key, holder) != holder:
                overwrites.append((key, holders[key], holder))
            holders[key] = holder
        else:
            holders.pop(key, None)
    check("kill test: no address was ever handed to a second holder without a release",
          puts > 0 and not overwrites,
          f"{len(killed)} killed, {len(torn_down)} torn down at once, {puts} writes in etcd's history, "
          f"overwrites {overwrites[:3]}")


def gc_status_check():
    prefix, rng = f"/hereabouts-cni/{RUN}/gc/", "10.43.0.0/24"
    config = conf(prefix, rng)
    for cid in ("keep", "drop1", "drop2"):
        call("ADD", cid, config)
    net = json.loads(config)
    net["cniVersion"] = "1.1.0"
    gc = dict(net, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    rc, out = call("GC", "", json.dumps(gc))
    left = allocations(prefix, "10.43.0.0-24")
    check("gc: frees every attachment not listed, keeps the listed one", rc == 0 and list(left.values()) == ["keep"],
          f"rc {rc}, left {left}")
    prev = dict(net, prevResult={"cniVersion": "1.1.0", "ips": [{"address": "10.43.0.1/24"}]})
    rc, out = call("CHECK", "keep", json.dumps(prev))
    check("check: the kept attachment checks out", rc == 0, json.dumps(out))
    rc, out = call("STATUS", "", json.dumps(net))
    check("status: usable while etcd is up", rc == 0, json.dumps(out))
    down = json.loads(config)
    down["ipam"]["etcd_host"] = "127.0.0.1:1"
    rc, out = call("STATUS", "", json.dumps(dict(down, cniVersion="1.1.0")))
    check("status: not usable (50) when etcd is unreachable", rc != 0 and out.get("code") == 50, out.get("msg", ""))



def status_command():
    """`hereabouts status` on the etcd store: the golden JSON of one pool, and --who."""
    prefix, rng = f"/hereabouts-cni/{RUN}/status/", "10.44.0.0/29"
    config = conf(prefix, rng)
    for cid in ("s1", "s2"):
        call("ADD", cid, config)
    path = f"/tmp/hereabouts-status-{RUN}.conf"
    with open(path, "w") as f:
        f.write(config)
    try:
        p = subprocess.run([BIN, "status", "--config", path, "--format", "json"], capture_output=True, text=True, timeout=60)
        expected = {"pools": [{"allocated": 2, "capacity": "6", "free": "4", "inconsistent": [], "persistent": [],
                               "network": "network etcdnet", "network_name": "", "pool": "10.44.0.0-29",
                               "range": "10.44.0.0/29", "reservations": 2}]}
        got = json.loads(p.stdout) if p.stdout.strip() else None
        check("status: one pool on etcd, counted", p.returncode == 0 and got == expected, f"rc {p.returncode}, {p.stdout} {p.stderr}")
        p = subprocess.run([BIN, "status", "--config", path, "--who", "10.44.0.2"], capture_output=True, text=True, timeout=60)
        check("status --who: names the holder on etcd", p.returncode == 0 and
              p.stdout.strip() == "10.44.0.2 in network etcdnet (pool 10.44.0.0-29): container s2, pod default/s2, ifname eth0",
              p.stdout + p.stderr)
    finally:
        os.unlink(path)


def sliced_conf(prefix, rng, size, name="slicenet"):
    c = json.loads(conf(prefix, rng))
    c["name"] = name
    c["ipam"]["node_slice_size"] = size
    return json.dumps(c)


def claims(prefix, network):
    """slice → node, straight from etcd."""
    out = etcdctl("get", "--prefix", f"{prefix}slices/{network}/claim/")
    lines = out.splitlines()
    return {k.rsplit("/", 1)[1].replace("%2F", "/"): json.loads(v)["node"] for k, v in zip(lines[0::2], lines[1::2])}


def cli(*args, config):
    path = f"/tmp/hereabouts-slices-{RUN}-{threading.get_ident()}.conf"
    with open(path, "w") as f:
        f.write(config)
    try:
        return subprocess.run([BIN, *args, "--config", path], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(path)


def node_slices():
    prefix = f"/hereabouts-cni/{RUN}/slices/"
    # Two nodes, one after the other: the lowest free slice each, lowest free inside it.
    config = sliced_conf(prefix, "10.45.0.0/26", "/28")
    got = {}
    for node, cid in (("node-a", "a1"), ("node-b", "b1"), ("node-a", "a2"), ("node-b", "b2")):
        rc, out = call("ADD", cid, config, node)
        got[cid] = address(out) if rc == 0 else out
    check("slices: each node's ADDs come from its own slice, lowest free inside it",
          got == {"a1": "10.45.0.1", "a2": "10.45.0.2", "b1": "10.45.0.17", "b2": "10.45.0.18"}, str(got))
    check("slices: the claims are visible in etcd, lowest slice first",
          claims(prefix, "slicenet") == {"10.45.0.0/28": "node-a", "10.45.0.16/28": "node-b"},
          str(claims(prefix, "slicenet")))
    check("slices: a node's allocations are in its slice pool",
          allocations(prefix, "node-a-10.45.0.0-28") == {"1": "a1", "2": "a2"}
          and allocations(prefix, "node-b-10.45.0.16-28") == {"1": "b1", "2": "b2"})
    rc, _ = call("DEL", "a1", config, "node-a")
    rc2, out = call("ADD", "a3", config, "node-a")
    check("slices: DEL frees in the node's slice; the next ADD there gets the lowest free again",
          rc == 0 and rc2 == 0 and address(out) == "10.45.0.1", json.dumps(out))
    rc, _ = call("DEL", "nothing", config, "node-q")
    check("slices: DEL on a node without a slice succeeds and claims nothing",
          rc == 0 and "node-q" not in claims(prefix, "slicenet").values())
    rc, out = call("CHECK", "nothing", json.dumps(dict(json.loads(config), prevResult={"cniVersion": "1.0.0", "ips": []})), "node-q")
    check("slices: CHECK on a node without a slice fails (11) and claims nothing",
          rc != 0 and out.get("code") == 11 and "node-q" not in claims(prefix, "slicenet").values(), json.dumps(out))
    p = cli("status", "--format", "json", config=config)
    pools = sorted((x["pool"], x["allocated"]) for x in json.loads(p.stdout or "{}").get("pools", []))
    check("slices: status shows each claimed slice's pool",
          p.returncode == 0 and pools == [("node-a-10.45.0.0-28", 2), ("node-b-10.45.0.16-28", 2)], p.stdout + p.stderr)

    # All slices taken: error 100 naming node_slice_size and the network.
    small = sliced_conf(prefix, "10.47.0.0/27", "/28", name="smallnet")
    call("ADD", "x1", small, "node-x")
    call("ADD", "y1", small, "node-y")
    rc, out = call("ADD", "z1", small, "node-z")
    check("slices: every slice taken is error 100 naming node_slice_size and the network",
          rc != 0 and out.get("code") == 100 and "node_slice_size" in out.get("msg", "")
          and "smallnet" in out.get("msg", ""), json.dumps(out))
    p = cli("slices", "release", "--node", "node-x", config=small)
    check("slices release: refuses a slice whose pool holds an address (exit 1), names it",
          p.returncode == 1 and "10.47.0.1" in p.stdout and claims(prefix, "smallnet").get("10.47.0.0/28") == "node-x",
          p.stdout + p.stderr)
    call("DEL", "x1", small, "node-x")
    p = cli("slices", "release", "--node", "node-x", config=small)
    check("slices release: frees the claim once the pool is empty",
          p.returncode == 0 and "10.47.0.0/28" not in claims(prefix, "smallnet"), p.stdout + p.stderr)
    rc, out = call("ADD", "z1", small, "node-z")
    check("slices: after a release, a new node gets the freed slice",
          rc == 0 and address(out) == "10.47.0.1" and claims(prefix, "smallnet").get("10.47.0.0/28") == "node-z",
          json.dumps(out))
    p = cli("slices", "list", "--format", "json", config=small)
    listed = [(s["slice"], s["node"], s["state"], s["allocated"]) for s in json.loads(p.stdout or "{}").get("slices", [])]
    check("slices list: every slice, its node and what its pool holds",
          listed == [("10.47.0.0/28", "node-z", "claimed", 1), ("10.47.0.16/28", "node-y", "claimed", 1)],
          p.stdout + p.stderr)

    # Many nodes at once, each with two ADDs racing: one slice per node, never shared.
    many = sliced_conf(prefix, "10.46.0.0/24", "/28", name="manynet")
    nodes = [f"n{i:02}" for i in range(10)]
    results = {}

    def add(job):
        node, k = job
        rc, out = call("ADD", f"{node}-{k}", many, node)
        results[(node, k)] = address(out) if rc == 0 else out
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(add, [(n, k) for n in nodes for k in range(2)]))
    held = claims(prefix, "manynet")
    by_node = {}
    for slice_, node in held.items():
        by_node.setdefault(node, []).append(slice_)
    check("slices: 20 ADDs from 10 nodes at once all succeed",
          all(isinstance(v, str) for v in results.values()), str([v for v in results.values() if not isinstance(v, str)][:2]))
    check("slices: concurrent claims: every node holds exactly one slice, no slice two nodes",
          sorted(by_node) == nodes and all(len(v) == 1 for v in by_node.values()), str(by_node))
    check("slices: concurrent claims take the lowest slices",
          sorted(held, key=lambda s: ipaddress.ip_network(s)) == [f"10.46.0.{16 * i}/28" for i in range(10)], str(sorted(held)))
    inside = all(isinstance(a, str) and ipaddress.ip_address(a) in ipaddress.ip_network(by_node[n][0])
                 for (n, _), a in results.items())
    check("slices: each node's addresses come from its own slice, lowest free inside it",
          inside and all(sorted(results[(n, k)].rsplit(".", 1)[1] for k in range(2)) ==
                         sorted(str(int(by_node[n][0].split(".")[3].split("/")[0]) + j) for j in (1, 2)) for n in nodes),
          str(results))

    # Before node slices on etcd the key was ignored: such an address is in the whole range's
    # pool, and its DEL, now on a sliced network, still frees it there.
    whole = sliced_conf(f"{prefix}upgrade/", "10.48.0.0/26", "/28", name="oldnet")
    plain = json.loads(whole)
    del plain["ipam"]["node_slice_size"]
    call("ADD", "old1", json.dumps(plain), "node-a")
    rc, _ = call("DEL", "old1", whole, "node-a")
    check("slices: DEL frees an address the whole range's pool got before node slices",
          rc == 0 and allocations(f"{prefix}upgrade/", "10.48.0.0-26") == {}, str(allocations(f"{prefix}upgrade/", "10.48.0.0-26")))

    # Re-cut (the NAD resized): old claims are stale, their slices blocked, their pods' DEL works.
    recut = sliced_conf(prefix, "10.45.0.0/25", "/27")
    rc, out = call("ADD", "a9", recut, "node-a")
    check("slices: after a re-cut a node claims a slice overlapping no old claim",
          rc == 0 and address(out) == "10.45.0.33" and claims(prefix, "slicenet").get("10.45.0.32/27") == "node-a",
          json.dumps(out) + str(claims(prefix, "slicenet")))
    rc, _ = call("DEL", "a2", recut, "node-a")
    check("slices: DEL after a re-cut frees the address in the node's old slice",
          rc == 0 and allocations(prefix, "node-a-10.45.0.0-28") == {"1": "a3"}, str(allocations(prefix, "node-a-10.45.0.0-28")))
    p = cli("slices", "list", "--format", "json", config=recut)
    states = {s["slice"]: s["state"] for s in json.loads(p.stdout or "{}").get("slices", [])}
    stale = sorted((s["slice"], s["node"]) for s in json.loads(p.stdout or "{}").get("slices", []) if s["state"] == "stale")
    check("slices list: the old claims show as stale, the slice they overlap as blocked",
          stale == [("10.45.0.0/28", "node-a"), ("10.45.0.16/28", "node-b")] and states.get("10.45.0.0/27") == "blocked"
          and states.get("10.45.0.64/27") == "free", p.stdout + p.stderr)


TESTS = [contention, faults, kill_test, bad_data, gc_status_check, status_command, node_slices]
wanted = sys.argv[4:]
for test in TESTS:
    if not wanted or test.__name__ in wanted:
        test()
sys.exit(1 if failures else 0)
