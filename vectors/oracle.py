#!/usr/bin/env python3
"""The naive reference the plan vectors are checked against when they are written.

An independent, deliberately simple model of the documented semantics (README "Semantics"):
walk every address of a range, as Whereabouts does, and keep those that are not the network
address, not the last address, not an IPv4 address ending in .0, inside range_start..range_end
and outside every exclude. It shares no code with the Rust core and is only practical for
small ranges; the huge-range vectors in plan.json were computed by hand (see their names).

usage: python3 vectors/oracle.py < document.json   → prints the expected `plan` output
"""
import ipaddress
import json
import sys


def addr(text):
    text = text.strip()
    if ":" not in text:  # Whereabouts reads IPv4 octets with leading zeros as decimal
        text = ".".join(str(int(p)) for p in text.split("."))
    return ipaddress.ip_address(text)


def one_range(r, allocated):
    text = r["range"].strip()
    start = end = None
    if "-" in text:
        s, text = text.split("-", 1)
        start = int(addr(s))
    ip, prefix = text.split("/")
    end_syntax = addr(ip)
    net = ipaddress.ip_network(f"{end_syntax}/{prefix}", strict=False)
    if start is not None:
        end = int(end_syntax)
    if r.get("range_start"):
        start = int(addr(r["range_start"]))
    if r.get("range_end"):
        end = int(addr(r["range_end"]))
    excluded = set()
    for e in r.get("exclude", []):
        en = ipaddress.ip_network(e if "/" in e else f"{e}/{net.max_prefixlen}", strict=False)
        excluded.update(int(a) for a in en)
    first, last = int(net.network_address), int(net.broadcast_address)
    lo = first + 1 if start is None else max(first + 1, start)
    hi = last - 1 if end is None else min(last - 1, end)
    ok = []
    for a in range(lo, hi + 1):
        if net.version == 4 and a & 0xFF == 0:
            continue
        if a in excluded:
            continue
        ok.append(a)
    used = {int(addr(a.split("/")[0])) for a in allocated}
    free = [a for a in ok if a not in used]
    fmt = lambda a: str(ipaddress.ip_address(a))
    return {
        "range": str(net),
        "first": fmt(ok[0]) if ok else None,
        "last": fmt(ok[-1]) if ok else None,
        "capacity": str(len(ok)),
        "free": str(len(free)),
        "next": fmt(free[0]) if free else None,
    }


def plan(doc):
    ipam = doc["ipam"]
    ranges = []
    if ipam.get("range"):
        ranges.append({k: ipam[k] for k in ("range", "range_start", "range_end", "exclude") if k in ipam})
    ranges += ipam.get("ipRanges", [])
    return {"ranges": [one_range(r, doc.get("allocated", [])) for r in ranges]}


if __name__ == "__main__":
    print(json.dumps(plan(json.load(sys.stdin))))
