//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS` (and `CNI_PATH`, which an IPAM plugin never needs: it calls no plugin).
//!
//! Which variables a verb needs follows the spec (ADD and CHECK: container, netns, ifname; DEL:
//! container and ifname, the netns may be gone); a missing one is CNI error 4 naming it.

use std::net::IpAddr;

use hereabouts_host::bindings::Owner;
use hereabouts_host::error::{CniError, Code};

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!(
                        "CNI_COMMAND: unknown command {other:?} (expected ADD, DEL, CHECK, VERSION, GC or STATUS)"
                    ),
                ));
            }
        })
    }

    /// The variables the spec makes mandatory for this verb (besides CNI_COMMAND).
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Gc | Command::Status => &[],
        }
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Unknown keys are ignored, as Whereabouts' users rely on passing
/// runtime-specific ones (`IgnoreUnknown=1` is therefore accepted and needless).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: String,
    pub pod_name: String,
    /// `IP=10.0.0.5,fd00::5` (addresses, optionally with a prefix length).
    pub ips: Vec<String>,
    /// `GATEWAY=10.0.0.254,fd00::fe` as written, split at commas (checked by
    /// [`CniArgs::gateways`] when ADD uses them, so a bad one never fails a DEL).
    pub gateway: Vec<String>,
}

impl CniArgs {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut args = CniArgs::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                ));
            };
            match key {
                "K8S_POD_NAMESPACE" => args.pod_namespace = value.to_string(),
                "K8S_POD_NAME" => args.pod_name = value.to_string(),
                "IP" => args.ips.extend(
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from),
                ),
                // Whereabouts splits a non-empty value at commas and parses every item; an
                // empty item is an invalid gateway there too.
                "GATEWAY" if !value.is_empty() => {
                    args.gateway = value.split(',').map(|g| g.trim().to_string()).collect();
                }
                _ => {}
            }
        }
        Ok(args)
    }

    /// `GATEWAY=`'s addresses, each read as Whereabouts reads it (Go's sloppy parser: IPv4
    /// octets may have leading zeros); one that is not an address is CNI error 4 naming it.
    pub fn gateways(&self) -> Result<Vec<IpAddr>, CniError> {
        self.gateway
            .iter()
            .map(|text| {
                parse_sloppy_ip(text).ok_or_else(|| {
                    CniError::new(
                        Code::InvalidEnvironment,
                        format!("CNI_ARGS: GATEWAY: {text:?} is not an IP address"),
                    )
                })
            })
            .collect()
    }

    /// Whereabouts' pod reference: `namespace/name`, "" unless both are known.
    pub fn podref(&self) -> String {
        if self.pod_namespace.is_empty() || self.pod_name.is_empty() {
            String::new()
        } else {
            format!("{}/{}", self.pod_namespace, self.pod_name)
        }
    }
}

/// An address as Go's `ParseIPSloppy` reads it: the standard forms, and IPv4 octets with
/// leading zeros (decimal, `010` is 10).
fn parse_sloppy_ip(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    let octets: Vec<u8> = text
        .split('.')
        .map(|o| {
            (!o.is_empty() && o.bytes().all(|b| b.is_ascii_digit())).then(|| o.parse().ok())?
        })
        .collect::<Option<_>>()?;
    let octets: [u8; 4] = octets.try_into().ok()?;
    Some(IpAddr::from(octets))
}

/// The environment of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

impl CniEnv {
    /// Reads the call's variables through `var` (the process environment in production).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = var("CNI_COMMAND")
            .ok_or_else(|| CniError::new(Code::InvalidEnvironment, "CNI_COMMAND: missing"))
            .and_then(|c| Command::parse(&c))?;
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let missing: Vec<&str> =
            command.required().iter().copied().filter(|name| get(name).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "required environment variables missing for {command:?}: {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(Self {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?,
        })
    }

    pub fn from_process() -> Result<Self, CniError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The allocation key: container id + interface, with the pod reference.
    pub fn owner(&self) -> Owner {
        Owner {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            podref: self.args.podref(),
            cni_network: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_vars(|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let error = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert_eq!(error.code, Code::InvalidEnvironment);
        assert!(error.msg.contains("CNI_NETNS, CNI_IFNAME"), "{}", error.msg);
        // DEL may come after the namespace is gone.
        let del = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])
            .unwrap();
        assert_eq!(del.command, Command::Del);
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        assert_eq!(env(&[]).unwrap_err().msg, "CNI_COMMAND: missing");
        assert!(
            env(&[("CNI_COMMAND", "ADDD")]).unwrap_err().msg.starts_with("CNI_COMMAND: unknown")
        );
    }

    #[test]
    fn cni_args_give_podref_and_requested_ips() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0;IP=10.0.0.5/24,fd00::5",
        )
        .unwrap();
        assert_eq!(args.podref(), "web/db-0");
        assert_eq!(args.ips, vec!["10.0.0.5/24", "fd00::5"]);
        assert_eq!(CniArgs::parse("K8S_POD_NAME=x").unwrap().podref(), "");
        assert!(args.gateway.is_empty());
        let error = CniArgs::parse("K8S_POD_NAME").unwrap_err();
        assert_eq!(error.code, Code::InvalidEnvironment);
        assert!(error.msg.starts_with("CNI_ARGS:"));
    }

    /// `GATEWAY=` as Whereabouts' `handleEnvArgs` reads it (pkg/config/config.go): a
    /// comma-separated list, each item trimmed and parsed sloppily; an empty value is none,
    /// an item that is not an address (an empty one too) fails the ADD.
    #[test]
    fn gateway_args_are_read_as_whereabouts_reads_them() {
        let gateways = |text: &str| CniArgs::parse(text).unwrap().gateways();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(gateways("GATEWAY=10.10.0.254").unwrap(), [ip("10.10.0.254")]);
        assert_eq!(
            gateways("IgnoreUnknown=1;GATEWAY=10.10.0.254, 3ffe:ffff:0:1ff::fe;IP=10.10.0.9/24")
                .unwrap(),
            [ip("10.10.0.254"), ip("3ffe:ffff:0:1ff::fe")]
        );
        assert_eq!(gateways("GATEWAY=010.010.000.254").unwrap(), [ip("10.10.0.254")]);
        assert!(gateways("GATEWAY=").unwrap().is_empty());
        assert!(gateways("K8S_POD_NAME=p").unwrap().is_empty());
        for bad in
            ["GATEWAY=router", "GATEWAY=10.10.0.254,", "GATEWAY=10.10.0.256", "GATEWAY=1.2.3"]
        {
            let error = gateways(bad).unwrap_err();
            assert_eq!(error.code, Code::InvalidEnvironment, "{bad}");
            assert!(error.msg.starts_with("CNI_ARGS: GATEWAY: "), "{bad}: {}", error.msg);
        }
    }
}
