#!/usr/bin/env python3
"""The naive reference the plan vectors are checked against when they are written.

An independent, deliberately simple model of the documented semantics (docs/semantics.md):
read the ranges as Whereabouts does (leading zeros are decimal; a range_start/range_end outside
the usable addresses of the CIDR, of the other family or unparsable is ignored, as is an end
before the start; the a-b/len syntax wins over the keys; an exclude outside the range or of the
other family excludes nothing), then walk every address of a range as Whereabouts does and keep
those that are not the network address, not the last address, not an IPv4 address ending in .0
(our one deliberate difference), inside range_start..range_end and outside every exclude (and,
with our opt-in `exclude_gateway: true`, not the gateway: it is one more excluded address; a
gateway outside the range or of the other family excludes nothing). It
shares no code with the Rust core and is only practical for small ranges; the huge-range vectors
in plan.json were computed by hand (see their names). It names the warnings (rule, field,
ignored) the core must give; their prose (`reason`) is the core's.

usage: python3 vectors/oracle.py < document.json   → prints the expected `plan` output
       python3 vectors/oracle.py --check FILE...   → checks every vector it can model
"""
import ipaddress
import json
import sys


class Rejected(Exception):
    pass


class TooBig(Exception):
    """A range too large to walk: such vectors are computed by hand."""


def addr(text):
    """An address as Whereabouts' sloppy parser reads it, or None."""
    try:
        if ":" not in text:  # IPv4 octets with leading zeros are decimal
            parts = text.split(".")
            if len(parts) != 4 or not all(p.isdigit() for p in parts):
                return None
            text = ".".join(str(int(p)) for p in parts)
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def network(text):
    ip, _, prefix = text.partition("/")
    a = addr(ip)
    if a is None or not prefix.isdigit():
        raise Rejected(text)
    if ":" in ip and a.version == 4:  # IPv4-mapped: the prefix counts 128 bits
        prefix = str(int(prefix) - 96)
    try:
        return a, ipaddress.ip_network(f"{a}/{int(prefix)}", strict=False)
    except ValueError:
        raise Rejected(text)


def one_range(r, base, allocated, persistent, warnings, gateway=None):
    def field(key):
        return f"{base}.{key}" if base else key

    text = r["range"]
    start = end = None  # (address, field, text as written)
    keys = {k: r.get(k) for k in ("range_start", "range_end") if r.get(k)}
    if "-" in text:
        s, rest = text.split("-", 1)
        end_ip, net = network(rest)
        a = addr(s)
        if a is None or a not in net:
            raise Rejected(s)
        start, end = (a, field("range"), s), (end_ip, field("range"), text)
        for key, value in keys.items():
            syntax = start[0] if key == "range_start" else end[0]
            if addr(value) is not None and addr(value) != syntax:
                warnings.append((f"{key.replace('_', '-')}-invalid", field(key), value))
    else:
        _, net = network(text)
        for key, value in keys.items():
            a = addr(value)
            if a is None:
                warnings.append((f"{key.replace('_', '-')}-invalid", field(key), value))
            elif key == "range_start":
                start = (a, field(key), value)
            else:
                end = (a, field(key), value)
    first, last = int(net.network_address), int(net.broadcast_address)
    if last - first > 1 << 20:
        raise TooBig(text)
    lo, hi = first + 1, last - 1
    for bound, rule in ((start, "range-start"), (end, "range-end")):
        if bound is None:
            continue
        a, where, written = bound
        if a.version != net.version:
            warnings.append((f"{rule}-invalid", where, written))
        elif int(a) < first or int(a) > last:
            warnings.append((f"{rule}-outside-range", where, written))
        elif int(a) in (first, last):
            warnings.append((f"{rule}-not-usable", where, written))
        elif rule == "range-start":
            lo = int(a)
        elif int(a) < lo:
            warnings.append(("range-start-after-end", where, written))
        else:
            hi = int(a)
    excluded = set()
    for i, e in enumerate(r.get("exclude", [])):
        try:
            en = ipaddress.ip_network(e if "/" in e else f"{e}/{128 if ':' in e else 32}", strict=False)
        except ValueError:
            raise Rejected(e)
        if en.version != net.version:
            warnings.append(("exclude-invalid", field(f"exclude[{i}]"), e))
        elif not en.overlaps(net):
            warnings.append(("exclude-outside-range", field(f"exclude[{i}]"), e))
        else:
            if not en.subnet_of(net):
                warnings.append(("exclude-partly-outside-range", field(f"exclude[{i}]"), e))
            excluded.update(a for a in range(max(int(en.network_address), first), min(int(en.broadcast_address), last) + 1))
    if gateway is not None and gateway.version == net.version:
        excluded.add(int(gateway))
    ok = [a for a in range(lo, hi + 1) if not (net.version == 4 and a & 0xFF == 0) and a not in excluded]
    if not ok:
        raise Rejected("nothing to hand out")
    def addresses(texts):
        found = (addr(x.split("/")[0]) for x in texts or [])
        return {int(a) for a in found if a is not None and a.version == net.version}
    kept = addresses(persistent)  # taken, held by no pod: neither free nor in use
    used = addresses(allocated) | kept
    free = [a for a in ok if a not in used]
    fmt = lambda a: str(ipaddress.IPv6Address(a) if net.version == 6 else ipaddress.IPv4Address(a))
    report = {
        "range": str(net),
        "first": fmt(ok[0]),
        "last": fmt(ok[-1]),
        "capacity": str(len(ok)),
        "free": str(len(free)),
        "next": fmt(free[0]) if free else None,
    }
    if persistent:  # shown only for a document that lists persistent addresses
        report["persistent"] = str(sum(1 for a in ok if a in kept))
    return report


def plan(doc):
    ipam = doc["ipam"]
    ranges, warnings = [], []
    if ipam.get("range"):
        top = {k: ipam[k] for k in ("range", "range_start", "range_end", "exclude") if k in ipam}
        ranges.append(("", top))
    else:
        for key in ("range_start", "range_end"):
            if ipam.get(key):
                warnings.append(("range-key-without-range", key, ipam[key]))
        for i, e in enumerate(ipam.get("exclude") or []):
            warnings.append(("range-key-without-range", f"exclude[{i}]", e))
    ranges += [(f"ipRanges[{i}]", r) for i, r in enumerate(ipam.get("ipRanges") or [])]
    if not ranges:
        raise Rejected("no range")
    if ipam.get("gateway") and addr(ipam["gateway"]) is None:
        raise Rejected(ipam["gateway"])
    excluded_gateway = None
    if ipam.get("exclude_gateway") not in (None, True, False):
        raise Rejected("exclude_gateway")
    if ipam.get("exclude_gateway"):
        if ipam.get("gateway"):
            excluded_gateway = addr(ipam["gateway"])
        else:
            warnings.append(("exclude-gateway-without-gateway", "exclude_gateway", "true"))
    for key in ("allocated", "persistent"):
        if any(addr(a.split("/")[0]) is None for a in doc.get(key) or []):
            raise Rejected(key)
    reports = [
        one_range(r, base, doc.get("allocated"), doc.get("persistent"), warnings, excluded_gateway)
        for base, r in ranges
    ]
    return {"ranges": reports, "warnings": [list(w) for w in warnings]}


def check(paths):
    failures = checked = 0
    for path in paths:
        for v in json.load(open(path)):
            if "by hand" in v["name"] or "stdin" in v or not isinstance(v.get("input"), dict) or "ipam" not in v["input"]:
                continue
            expect = v["expect"]
            try:
                got = plan(v["input"])
            except (Rejected, KeyError, TypeError, AttributeError):
                got = None
            except TooBig:
                continue
            if "code" in expect:
                ok = got is None
            else:
                want = [[w["rule"], w["field"], w["ignored"]] for w in expect.get("warnings", [])]
                ok = got is not None and got["ranges"] == expect["ranges"] and sorted(got["warnings"]) == sorted(want)
            checked += 1
            if not ok:
                failures += 1
                print(f"{path}: {v['name']}\n  expect {json.dumps(expect)}\n  oracle {json.dumps(got)}")
    print(f"{checked - failures} passed, {failures} failed")
    return failures == 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(0 if check(sys.argv[2:]) else 1)
    print(json.dumps(plan(json.load(sys.stdin))))
