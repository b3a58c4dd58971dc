//! Node slices (Whereabouts' "Fast IPAM", `node_slice_size`): the range cut into equal slices,
//! one per node, so that nodes never contend for one pool.
//!
//! Every piece of slice maths lives here, so that the CNI plugin, the controller, `plan` and
//! the playground agree: how `node_slice_size` reads, how the range is cut, how a node's slice
//! pool is named and which addresses it hands out. Hosts only move the NodeSlicePool object.
//!
//! As Whereabouts (v0.9, pkg/iphelpers `DivideRangeBySize`, pkg/node-controller,
//! pkg/storage/kubernetes/ipam.go):
//! - `node_slice_size` is a prefix length, with or without a leading `/` (Go's `strconv.Atoi`
//!   after `strings.TrimPrefix(s, "/")`: an optional sign, decimal digits);
//! - only the first range is sliced (`IPRanges[0]`, the top-level `range` when set); the
//!   slices are `2^(size - prefix)` consecutive CIDRs from the range's network address;
//! - the NodeSlicePool is named `network_name`, or the CNI network's `name` when unnamed;
//! - a node's pool is the IPPool `[network_name-]<node>-<slice>` (`:` and `/` turned into
//!   `-`), with `spec.range` the slice and offsets from the slice's network address;
//! - inside its slice a node hands out from the slice's first to last usable address
//!   (network + 1 .. broadcast − 1 of the slice), and a pod's address carries the whole
//!   range's prefix length, not the slice's.
//!
//! Where we differ, deliberately (docs/semantics.md): what would make every ADD fail in
//! Whereabouts is refused when read (an unparsable size — Whereabouts then makes no slice at
//! all —, a size shorter than the range's prefix, slices with no usable address, several
//! ranges, more than [`MAX_SLICES`] slices); IPv6 ranges are sliced too (Whereabouts'
//! controller panics on them); and `exclude` is honoured inside a slice (Whereabouts drops it).

use crate::addr::{Family, format_address, host_mask};
use crate::network::Network;
use crate::range::Range;
use crate::types::{FieldError, Finding, IpamError, NetworkConfig, NodeSlice, Severity, Slicing};

/// The most slices one network may have. A NodeSlicePool lists every slice in its status, and
/// an object must stay under etcd's default request limit of 1.5 MiB: 16384 entries of about
/// 50 bytes each is 0.8 MiB.
pub const MAX_SLICES: u128 = 16384;

/// `node_slice_size` as Whereabouts reads it: `strings.TrimPrefix(s, "/")`, then Go's
/// `strconv.Atoi` (optional `+`/`-`, decimal digits, leading zeros allowed).
pub fn parse_size(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('/').unwrap_or(text);
    let (negative, digits) = match digits.as_bytes().first() {
        Some(b'+') => (false, &digits[1..]),
        Some(b'-') => (true, &digits[1..]),
        _ => (false, digits),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Why a `node_slice_size` cannot be used with a range (`Err`), else the slice prefix length.
pub fn check_size(text: &str, range: &Range) -> Result<u32, String> {
    let Some(size) = parse_size(text) else {
        return Err(format!(
            "{text} is not a prefix length: expected e.g. \"/28\" or \"28\" (Whereabouts makes no \
             slice from it, so every ADD would fail)"
        ));
    };
    let bits = range.family.bits() as i64;
    let cidr = range.cidr();
    if size < range.prefix as i64 {
        return Err(format!(
            "{text} is shorter than range {cidr}'s prefix /{}: a slice cannot be larger than \
             the range",
            range.prefix
        ));
    }
    if size > bits - 2 {
        return Err(format!(
            "{text} leaves no usable address in a slice (the slice's network and broadcast \
             addresses are never handed out): at most /{} for {}",
            bits - 2,
            range.family.name()
        ));
    }
    let size = size as u32;
    if size - range.prefix >= 64 || (1u128 << (size - range.prefix)) > MAX_SLICES {
        return Err(format!(
            "{text} cuts range {cidr} into 2^{} slices; at most {MAX_SLICES} fit in one \
             NodeSlicePool",
            size - range.prefix
        ));
    }
    Ok(size)
}

/// The slices of `range` at prefix length `size` (checked), lowest first.
pub fn slices(range: &Range, size: u32) -> Vec<String> {
    let step = host_mask(range.family, size) + 1;
    let count = 1u128 << (size - range.prefix);
    (0..count)
        .map(|i| format!("{}/{size}", format_address(range.family, range.network + i * step)))
        .collect()
}

/// The slice `text` names if it is one of `range`'s slices at `size`: its network address.
pub fn slice_of(range: &Range, size: u32, text: &str) -> Option<u128> {
    let (family, value, prefix) = crate::addr::parse_cidr(text.trim())?;
    let aligned = value & !host_mask(family, size) == value;
    (family == range.family && prefix == size && aligned && range.contains(family, value))
        .then_some(value)
}

/// Addresses a pod can get in one slice of prefix length `size` (before excludes and IPv4
/// `.0`, which the pool removes): the slice without its network and broadcast addresses.
pub fn usable_per_slice(family: Family, size: u32) -> u128 {
    host_mask(family, size) - 1
}

/// Whereabouts' IPPool name for a node's slice: `[network_name-]<node>-<slice>` with `:` and
/// `/` turned into `-` (a slice text ending in `:` gets a `0` first).
pub fn pool_name(network_name: &str, node: &str, slice_cidr: &str) -> String {
    let mut cidr = slice_cidr.to_string();
    if cidr.ends_with(':') {
        cidr.push('0');
    }
    let normalized = cidr.replace([':', '/'], "-");
    if network_name.is_empty() {
        format!("{node}-{normalized}")
    } else {
        format!("{network_name}-{node}-{normalized}")
    }
}

/// The network `config` reads as, its slice size and `node_slice_size` as written; an error
/// naming the key when the network is not cut into node slices.
fn sliced(config: &NetworkConfig) -> Result<(Network, u32, &str), IpamError> {
    let network = Network::parse(config).map_err(IpamError::InvalidConfig)?;
    match (network.slice_size, config.node_slice_size.as_deref()) {
        (Some(size), Some(text)) => Ok((network, size, text)),
        _ => Err(IpamError::InvalidConfig(FieldError {
            field: "node_slice_size".into(),
            message: "is not set: this network is not cut into node slices".into(),
        })),
    }
}

/// How `config`'s range is cut (`node-slicing` in the WIT file). `cni_network` is the CNI config's
/// `name`, which names the NodeSlicePool of an unnamed network.
pub fn slicing(config: &NetworkConfig, cni_network: &str) -> Result<Slicing, IpamError> {
    let (network, size, text) = sliced(config)?;
    let range = &network.ranges[0];
    // A config already narrowed to a node's slice still describes the whole range's slicing.
    let whole = match &range.slice_of {
        Some(_) => {
            let unsliced = NetworkConfig { node_slice: None, ..config.clone() };
            return slicing(&unsliced, cni_network);
        }
        None => range,
    };
    let pool_name = if network.network_name.is_empty() {
        cni_network.to_string()
    } else {
        network.network_name
    };
    Ok(Slicing {
        pool_name,
        range: whole.cidr(),
        slice_size: text.to_string(),
        slices: slices(whole, size),
        addresses_per_slice: usable_per_slice(whole.family, size).to_string(),
    })
}

/// The rule id of [`fit_nodes`]' finding, the one `check` reports it under.
pub const FEWER_SLICES_THAN_NODES: &str = "node-slices-fewer-than-nodes";

/// Whether `nodes` nodes each get a slice of `config` (`fit-nodes` in the WIT file): `None`
/// when they do, else a warning naming the slice and node counts and what would fit them —
/// the `node_slice_size` with the largest slices that still gives every node one, and the
/// range that would at the size written. One verdict, so `check` and the playground agree.
pub fn fit_nodes(config: &NetworkConfig, nodes: u32) -> Result<Option<Finding>, IpamError> {
    if config.node_slice.is_some() {
        let unsliced = NetworkConfig { node_slice: None, ..config.clone() };
        return fit_nodes(&unsliced, nodes);
    }
    let (network, size, text) = sliced(config)?;
    let range = &network.ranges[0];
    let count = 1u128 << (size - range.prefix);
    let wanted = u128::from(nodes);
    if count >= wanted {
        return Ok(None);
    }
    // Here nodes >= 2: the doublings of the slice count that give every node a slice.
    let doublings = (wanted - 1).ilog2() + 1;
    let enough = 1u128 << doublings;
    let family = range.family;
    let per_slice = |size: u32| usable_per_slice(family, size);
    let smaller = Some(range.prefix + doublings)
        .filter(|&fit| check_size(&format!("/{fit}"), range).is_ok())
        .map(|fit| {
            format!(
                "node_slice_size \"/{fit}\" cuts it into {enough} slices of {} addresses",
                per_slice(fit)
            )
        });
    let wider = size.checked_sub(doublings).filter(|_| enough <= MAX_SLICES).map(|prefix| {
        let network = format_address(family, range.network & !host_mask(family, prefix));
        format!(
            "a /{prefix} range (such as {network}/{prefix}) keeps {} addresses per slice for \
                 {enough} slices",
            per_slice(size)
        )
    });
    let remedy = match (smaller, wider) {
        (Some(smaller), Some(wider)) => format!("{smaller}; or {wider}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => format!(
            "no node_slice_size cuts {} into {nodes} slices (a NodeSlicePool holds at most \
             {MAX_SLICES}, and a slice needs a usable address): split the nodes over several \
             networks",
            range.cidr()
        ),
    };
    let short = wanted - count;
    let message = format!(
        "node_slice_size {text} cuts {} into {count} slices of {} addresses, fewer than the \
         {nodes} nodes: {short} {} no slice, and pods there no address; {remedy}",
        range.cidr(),
        per_slice(size),
        if short == 1 { "node gets" } else { "nodes get" },
    );
    Ok(Some(Finding {
        rule: FEWER_SLICES_THAN_NODES.into(),
        severity: Severity::Warning,
        field: "node_slice_size".into(),
        message,
    }))
}

/// `config` narrowed to `node`'s slice `slice_cidr` (`on-node-slice` in the WIT file): the
/// allocator then works on the node's slice pool.
pub fn on_node_slice(
    config: &NetworkConfig,
    node: &str,
    slice_cidr: &str,
) -> Result<NetworkConfig, IpamError> {
    let narrowed = NetworkConfig {
        node_slice: Some(NodeSlice { node: node.trim().into(), slice: slice_cidr.trim().into() }),
        ..config.clone()
    };
    Network::parse(&narrowed).map_err(IpamError::InvalidConfig)?;
    Ok(narrowed)
}
