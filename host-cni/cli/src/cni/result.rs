//! The ADD result, in the layout of the request's `cniVersion`.
//!
//! Besides the allocated addresses, Whereabouts passes through the static IPAM plugin's keys:
//! `routes`, `dns`, and static `addresses` (appended after the allocated ones), and puts the
//! configured `gateway` on the addresses. We do the same, except that the gateway only goes on
//! addresses of its own family — Whereabouts' dual-stack results carry an IPv4 gateway on the
//! IPv6 address, which main plugins then fail on.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::version::{CniVersion, ResultFormat};
use hereabouts_host::bindings::Lease;
use hereabouts_host::config::IpamConfig;
use hereabouts_host::error::{CniError, Code};

/// One address of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    /// CIDR form, `10.0.0.2/24`.
    pub address: String,
    pub gateway: Option<String>,
    pub v6: bool,
}

/// The ipam section's static parts, validated once at parse time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statics {
    pub routes: Vec<Value>,
    pub dns: Option<Value>,
    pub addresses: Vec<IpEntry>,
    pub gateway: Option<IpAddr>,
    /// CNI_ARGS `GATEWAY=` with the addresses asked for by `IP=` (see [`Statics::with_arg_gateways`]).
    pub arg_gateways: Vec<IpAddr>,
    pub arg_addresses: Vec<IpAddr>,
}

impl Statics {
    /// The static parts of `ipam`. The gateway is not among them: it is the core's reading
    /// (canonical text, `read-config`), set with [`Statics::with_gateway`].
    pub fn from_ipam(ipam: &IpamConfig) -> Result<Self, CniError> {
        let gateway = None;
        let routes = match &ipam.routes {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(routes)) => {
                for (i, route) in routes.iter().enumerate() {
                    let field = format!("ipam.routes[{i}]");
                    let dst = route.get("dst").and_then(Value::as_str);
                    let dst = dst.ok_or_else(|| {
                        invalid(format!("{field}.dst: missing; a route needs a destination CIDR"))
                    })?;
                    parse_cidr(dst)
                        .ok_or_else(|| invalid(format!("{field}.dst: {dst:?} is not a CIDR")))?;
                    if let Some(gw) = route.get("gw").filter(|g| !g.is_null()) {
                        gw.as_str().and_then(parse_ip).ok_or_else(|| {
                            invalid(format!("{field}.gw: {gw} is not an IP address"))
                        })?;
                    }
                }
                routes.clone()
            }
            Some(_) => {
                return Err(invalid(
                    "ipam.routes: must be a list of {\"dst\": CIDR, \"gw\": address}",
                ));
            }
        };
        let dns = match &ipam.dns {
            None | Some(Value::Null) => None,
            Some(dns @ Value::Object(_)) => Some(dns.clone()),
            Some(_) => {
                return Err(invalid(
                    "ipam.dns: must be an object (nameservers, domain, search, options)",
                ));
            }
        };
        let addresses = match &ipam.addresses {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let field = format!("ipam.addresses[{i}]");
                    let address = item.get("address").and_then(Value::as_str);
                    let address = address.ok_or_else(|| {
                        invalid(format!("{field}.address: missing; expected a CIDR"))
                    })?;
                    let ip = parse_cidr(address).ok_or_else(|| {
                        invalid(format!("{field}.address: {address:?} is not a CIDR"))
                    })?;
                    let gateway = match item.get("gateway").filter(|g| !g.is_null()) {
                        None => None,
                        Some(gw) => {
                            let text = gw.as_str().filter(|g| parse_ip(g).is_some());
                            Some(
                                text.ok_or_else(|| {
                                    invalid(format!("{field}.gateway: {gw} is not an IP address"))
                                })?
                                .to_string(),
                            )
                        }
                    };
                    Ok(IpEntry { address: address.to_string(), gateway, v6: ip.is_ipv6() })
                })
                .collect::<Result<_, CniError>>()?,
            Some(_) => {
                return Err(invalid(
                    "ipam.addresses: must be a list of {\"address\": CIDR, \"gateway\": address}",
                ));
            }
        };
        Ok(Self { routes, dns, addresses, gateway, ..Self::default() })
    }

    /// The ipam section's static `addresses`, without prefix (CHECK accepts them in a result).
    pub fn static_addresses(&self) -> Vec<IpAddr> {
        self.addresses.iter().filter_map(|a| parse_cidr(&a.address)).collect()
    }

    /// The gateway the core read (canonical, so std's strict parser reads it too).
    pub fn with_gateway(mut self, gateway: Option<&str>) -> Self {
        self.gateway = gateway.and_then(parse_ip);
        self
    }

    /// CNI_ARGS `GATEWAY=`, as Whereabouts applies it (`handleEnvArgs`): each gateway goes on
    /// every static address whose network contains it — the ipam section's `addresses`, and
    /// the addresses asked for with `IP=` (`ip_args`, which Whereabouts returns as static
    /// addresses and we allocate from the pool) — replacing their gateway; a later gateway
    /// wins. The other allocated addresses keep the configured `gateway`.
    pub fn with_arg_gateways(mut self, gateways: Vec<IpAddr>, ip_args: Vec<IpAddr>) -> Self {
        self.arg_gateways = gateways;
        self.arg_addresses = ip_args;
        self
    }

    /// The last `GATEWAY=` address inside `cidr`'s network.
    fn arg_gateway_in(&self, cidr: &str) -> Option<String> {
        self.arg_gateways.iter().rev().find(|g| contains(cidr, **g)).map(IpAddr::to_string)
    }

    /// The result's addresses: the allocated ones, then the static ones.
    pub fn ips(&self, leases: &[Lease]) -> Vec<IpEntry> {
        let allocated = leases.iter().map(|lease| {
            let v6 = lease.address.contains(':');
            let asked = lease.address.parse().is_ok_and(|a| self.arg_addresses.contains(&a));
            let gateway = asked
                .then(|| self.arg_gateway_in(&lease.cidr))
                .flatten()
                .or_else(|| self.gateway.filter(|g| g.is_ipv6() == v6).map(|g| g.to_string()));
            IpEntry { address: lease.cidr.clone(), gateway, v6 }
        });
        let statics = self.addresses.iter().map(|entry| IpEntry {
            gateway: self.arg_gateway_in(&entry.address).or_else(|| entry.gateway.clone()),
            ..entry.clone()
        });
        allocated.chain(statics).collect()
    }
}

/// The ADD result for `leases` in `version`'s layout.
pub fn render(version: CniVersion, leases: &[Lease], statics: &Statics) -> Value {
    let ips = statics.ips(leases);
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.as_str()));
    match version.result_format() {
        ResultFormat::Legacy => {
            // One address per family; routes go with the family of their destination.
            for (key, v6) in [("ip4", false), ("ip6", true)] {
                let Some(ip) = ips.iter().find(|ip| ip.v6 == v6) else { continue };
                let mut entry = Map::new();
                entry.insert("ip".into(), json!(ip.address));
                if let Some(gateway) = &ip.gateway {
                    entry.insert("gateway".into(), json!(gateway));
                }
                let routes: Vec<&Value> = statics
                    .routes
                    .iter()
                    .filter(|r| {
                        r.get("dst").and_then(Value::as_str).is_some_and(|d| d.contains(':') == v6)
                    })
                    .collect();
                if !routes.is_empty() {
                    entry.insert("routes".into(), json!(routes));
                }
                out.insert(key.into(), Value::Object(entry));
            }
        }
        format => {
            let ips: Vec<Value> = ips
                .iter()
                .map(|ip| {
                    let mut entry = Map::new();
                    if format == ResultFormat::Versioned {
                        entry.insert("version".into(), json!(if ip.v6 { "6" } else { "4" }));
                    }
                    entry.insert("address".into(), json!(ip.address));
                    if let Some(gateway) = &ip.gateway {
                        entry.insert("gateway".into(), json!(gateway));
                    }
                    Value::Object(entry)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
            if !statics.routes.is_empty() {
                out.insert("routes".into(), Value::Array(statics.routes.clone()));
            }
        }
    }
    if let Some(dns) = &statics.dns {
        out.insert("dns".into(), dns.clone());
    }
    Value::Object(out)
}

/// The addresses (without prefix) a previous result reports, for CHECK. Reads the `ips` list
/// of 0.3.0 and later and the `ip4`/`ip6` objects of older results.
pub fn addresses_in(result: &Value) -> Vec<IpAddr> {
    let from_ips = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address"));
    let legacy =
        ["ip4", "ip6"].into_iter().filter_map(|k| result.get(k)).filter_map(|ip| ip.get("ip"));
    from_ips.chain(legacy).filter_map(Value::as_str).filter_map(parse_cidr).collect()
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// Whether `address` lies in the network of `cidr` (`10.0.0.9/24` holds 10.0.0.254).
fn contains(cidr: &str, address: IpAddr) -> bool {
    let Some((Some(base), Ok(prefix))) =
        cidr.split_once('/').map(|(a, p)| (a.parse::<IpAddr>().ok(), p.parse::<u32>()))
    else {
        return false;
    };
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    };
    // Both families sit in the top bits, so the prefix counts from the top either way.
    let ((v6, base), (family, address)) = (bits(base), bits(address));
    if v6 != family || prefix > if v6 { 128 } else { 32 } {
        return false;
    }
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    base & mask == address & mask
}

/// `address/prefix` with a prefix length that fits the family; returns the address.
pub fn parse_cidr(text: &str) -> Option<IpAddr> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv6() { 128 } else { 32 };
    (prefix <= max).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: &str, cidr: &str) -> Lease {
        Lease {
            address: address.into(),
            cidr: cidr.into(),
            field: "range".into(),
            range: String::new(),
        }
    }

    fn statics(ipam: Value) -> Result<Statics, CniError> {
        Statics::from_ipam(&IpamConfig::from_value(&ipam).unwrap())
    }

    #[test]
    fn layouts_by_version_with_gateway_on_its_own_family() {
        let s = statics(json!({
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00::1"}],
            "dns": {"nameservers": ["10.0.0.53"]},
            "addresses": [{"address": "192.168.9.9/24", "gateway": "192.168.9.1"}]
        }))
        .unwrap()
        .with_gateway(Some("10.0.0.1"));
        let leases = [lease("10.0.0.2", "10.0.0.2/24"), lease("fd00::2", "fd00::2/64")];
        let v = |s: &str| CniVersion::parse(s).unwrap();

        let current = render(v("1.0.0"), &leases, &s);
        assert_eq!(
            current["ips"],
            json!([
                {"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                {"address": "fd00::2/64"},
                {"address": "192.168.9.9/24", "gateway": "192.168.9.1"}
            ])
        );
        assert_eq!(current["routes"][1]["gw"], "fd00::1");
        assert_eq!(current["dns"]["nameservers"][0], "10.0.0.53");

        let versioned = render(v("0.3.1"), &leases, &s);
        assert_eq!(versioned["cniVersion"], "0.3.1");
        assert_eq!(versioned["ips"][0]["version"], "4");
        assert_eq!(versioned["ips"][1]["version"], "6");

        let legacy = render(v("0.2.0"), &leases, &s);
        assert_eq!(
            legacy["ip4"],
            json!({"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]})
        );
        assert_eq!(legacy["ip6"]["ip"], "fd00::2/64");
        assert!(legacy.get("ips").is_none());
    }

    /// Vectors from Whereabouts' "can still assign static parameters" (cmd/whereabouts_test.go:
    /// range 192.168.1.44/28 with gateway 192.168.1.1, static 10.10.0.1/24 via 10.10.0.254
    /// and 3ffe:ffff:0:01ff::1/64 via 3ffe:ffff:0::1), with CNI_ARGS GATEWAY= applied as
    /// its `handleEnvArgs` does.
    #[test]
    fn gateway_args_go_on_the_static_addresses_that_contain_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let base = || {
            statics(json!({"addresses": [
                {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}]}))
            .unwrap()
            .with_gateway(Some("192.168.1.1"))
        };
        let leases = [lease("192.168.1.33", "192.168.1.33/28")];
        let gateways = |s: Statics, leases: &[Lease]| {
            s.ips(leases).into_iter().map(|e| e.gateway.unwrap_or_default()).collect::<Vec<_>>()
        };
        // Whereabouts' own answer, no GATEWAY=.
        assert_eq!(gateways(base(), &leases), ["192.168.1.1", "10.10.0.254", "3ffe:ffff:0::1"]);
        // One gateway per family, each on the static address whose network holds it.
        let both =
            base().with_arg_gateways(vec![ip("10.10.0.200"), ip("3ffe:ffff:0:1ff::fe")], vec![]);
        assert_eq!(gateways(both, &leases), ["192.168.1.1", "10.10.0.200", "3ffe:ffff:0:1ff::fe"]);
        // A gateway no static address contains changes nothing; of two, the later wins.
        let none = base().with_arg_gateways(vec![ip("10.99.0.1"), ip("192.168.1.46")], vec![]);
        assert_eq!(gateways(none, &leases), ["192.168.1.1", "10.10.0.254", "3ffe:ffff:0::1"]);
        let later = base().with_arg_gateways(vec![ip("10.10.0.200"), ip("10.10.0.201")], vec![]);
        assert_eq!(gateways(later, &leases)[1], "10.10.0.201");
        // IP= 192.168.1.40 (allocated here, a static address in Whereabouts) takes the
        // GATEWAY= inside its network; the other allocated address keeps the configured one.
        let asked =
            [lease("192.168.1.40", "192.168.1.40/28"), lease("192.168.1.33", "192.168.1.33/28")];
        let with_ip = base().with_arg_gateways(vec![ip("192.168.1.46")], vec![ip("192.168.1.40")]);
        assert_eq!(
            gateways(with_ip, &asked),
            ["192.168.1.46", "192.168.1.1", "10.10.0.254", "3ffe:ffff:0::1"]
        );
    }

    #[test]
    fn bad_statics_name_the_field() {
        let cases = [
            (json!({"routes": [{"gw": "10.0.0.1"}]}), "ipam.routes[0].dst: missing"),
            (json!({"routes": [{"dst": "10.0.0.0/33"}]}), "ipam.routes[0].dst: \"10.0.0.0/33\""),
            (json!({"routes": {"dst": "x"}}), "ipam.routes: must be a list"),
            (
                json!({"addresses": [{"address": "10.0.0.5"}]}),
                "ipam.addresses[0].address: \"10.0.0.5\" is not a CIDR",
            ),
            (
                json!({"addresses": [{"address": "10.0.0.5/24", "gateway": "x"}]}),
                "ipam.addresses[0].gateway:",
            ),
            (json!({"dns": ["8.8.8.8"]}), "ipam.dns: must be an object"),
        ];
        for (ipam, start) in cases {
            let error = statics(ipam.clone()).unwrap_err();
            assert_eq!(error.code, Code::InvalidConfig);
            assert!(error.msg.starts_with(start), "{ipam}: {}", error.msg);
        }
    }

    #[test]
    fn check_reads_addresses_of_every_layout() {
        let ips = addresses_in(
            &json!({"ips": [{"address": "10.0.0.2/24"}], "ip6": {"ip": "fd00::2/64"}}),
        );
        assert_eq!(ips, vec!["10.0.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse().unwrap()]);
    }
}
