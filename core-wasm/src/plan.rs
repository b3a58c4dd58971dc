//! Pure views of a config for people and CI: plan, validate, overlaps, range map.
//! None of these touch a store; `allocated` stands for what a store would hold, `persistent`
//! for what it holds for an IPAMClaim or StatefulSet member that no pod holds.

use crate::addr::{Family, format_address, parse_address};
use crate::network::{Network, analyze};
use crate::pool::Pool;
use crate::range::Range;
use crate::types::{
    FieldError, Finding, IpamError, MapBucket, NetworkConfig, Overlap, OverlapKind, PlanRequest,
    RangeReport, Severity,
};

/// Longest `next` list a caller may ask for: a preview, not an enumeration.
pub const MAX_PREVIEW: u32 = 1024;
/// Most buckets a range map may have.
pub const MAX_BUCKETS: u32 = 65_536;

/// The addresses of a request list (`allocated` or `persistent`, named in errors), prefix
/// lengths dropped.
fn parse_addresses(key: &str, list: &[String]) -> Result<Vec<(Family, u128)>, IpamError> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            let bare = text.trim().split('/').next().unwrap_or_default();
            parse_address(bare).ok_or_else(|| {
                IpamError::InvalidConfig(FieldError {
                    field: format!("{key}[{i}]"),
                    message: format!("{text} is not an IP address"),
                })
            })
        })
        .collect()
}

fn used_in<'a>(
    range: &'a Range,
    addresses: impl IntoIterator<Item = &'a (Family, u128)> + 'a,
) -> impl Iterator<Item = u128> + 'a {
    addresses.into_iter().filter(|(f, a)| range.contains(*f, *a)).map(|(_, a)| *a)
}

/// A request's two lists, read: what is taken (either list) and what of it is persistent.
struct Taken {
    allocated: Vec<(Family, u128)>,
    persistent: Vec<(Family, u128)>,
}

impl Taken {
    fn read(request: &PlanRequest) -> Result<Self, IpamError> {
        Ok(Taken {
            allocated: parse_addresses("allocated", &request.allocated)?,
            persistent: parse_addresses("persistent", &request.persistent)?,
        })
    }

    /// The range's pool with every taken address blocked, and the pool of its persistent ones
    /// alone (whose `allocated` count is the persistent count: excludes and duplicates do not
    /// count, an address in both lists counts once, as persistent).
    fn pools(&self, range: &Range) -> (Pool, Pool) {
        let taken = used_in(range, self.allocated.iter().chain(&self.persistent));
        (range.pool(taken), range.pool(used_in(range, &self.persistent)))
    }
}

pub fn plan(request: &PlanRequest) -> Result<Vec<RangeReport>, IpamError> {
    let network = Network::parse(&request.network)?;
    // What a new pod would get: nothing, with the same error as its ADD.
    if let Some(error) = &request.network.allocation_error {
        return Err(IpamError::InvalidConfig(error.clone()));
    }
    let taken = Taken::read(request)?;
    let preview = request.preview.min(MAX_PREVIEW) as usize;
    Ok(network
        .ranges
        .iter()
        .map(|range| {
            let (pool, persistent) = taken.pools(range);
            let empty = range.pool(std::iter::empty());
            let bounds = empty
                .next_free(1)
                .first()
                .copied()
                .map(|first| (first, last_allocatable(range, &empty)));
            RangeReport {
                field: range.field.clone(),
                range: range.cidr(),
                first: bounds.map(|(f, _)| range.format(f)),
                last: bounds.and_then(|(_, l)| l).map(|l| range.format(l)),
                capacity: pool.capacity().to_string(),
                free: pool.free().to_string(),
                persistent: persistent.allocated().to_string(),
                next: pool.next_free(preview).into_iter().map(|a| range.format(a)).collect(),
            }
        })
        .collect())
}

/// The highest address that can be handed out, excludes considered.
fn last_allocatable(range: &Range, empty: &Pool) -> Option<u128> {
    // Walk down over excludes: each step skips a whole exclude.
    let mut candidate = range.last;
    loop {
        if candidate < range.first {
            return None;
        }
        match empty.check(candidate) {
            Ok(()) => return Some(candidate),
            Err(_) => {
                let below = range
                    .excludes
                    .iter()
                    .filter(|(a, b)| *a <= candidate && candidate <= *b)
                    .map(|(a, _)| *a)
                    .min()
                    .unwrap_or(candidate);
                candidate = below.checked_sub(1)?;
            }
        }
    }
}

pub fn validate(config: &NetworkConfig) -> Vec<Finding> {
    let mut findings = analyze(config).1;
    // A config that hands out nothing carries its own error as the allocation error.
    let reported =
        |e: &FieldError| findings.iter().any(|f| f.field == e.field && f.message == e.message);
    if let Some(error) = config.allocation_error.as_ref().filter(|e| !reported(e)) {
        findings.push(Finding {
            rule: "exclude-invalid".into(),
            severity: Severity::Error,
            field: error.field.clone(),
            message: format!("{}; every ADD of a new pod fails", error.message),
        });
    }
    findings
}

/// Where two networks could hand out the same address: for each pair of same-family ranges,
/// the first and last address allocatable in both (excludes considered, allocations not).
pub fn overlaps(a: &NetworkConfig, b: &NetworkConfig) -> Result<Vec<Overlap>, IpamError> {
    let a = Network::parse(a)?;
    let b = Network::parse(b)?;
    let mut out = Vec::new();
    for ra in &a.ranges {
        for rb in b.ranges.iter().filter(|r| r.family == ra.family) {
            let (pa, pb) = (ra.pool(std::iter::empty()), rb.pool(std::iter::empty()));
            let (lo, hi) = (ra.first.max(rb.first), ra.last.min(rb.last));
            if lo > hi {
                continue;
            }
            // Alternate between the two pools until both agree: each step skips a whole
            // excluded run of one of them.
            let common = |mut x: u128, up: bool| -> Option<u128> {
                loop {
                    let (ya, yb);
                    if up {
                        ya = pa.free_at_or_above(x).filter(|&y| y <= hi)?;
                        yb = pb.free_at_or_above(ya).filter(|&y| y <= hi)?;
                    } else {
                        ya = pa.free_at_or_below(x).filter(|&y| y >= lo)?;
                        yb = pb.free_at_or_below(ya).filter(|&y| y >= lo)?;
                    }
                    if ya == yb {
                        return Some(ya);
                    }
                    x = yb;
                }
            };
            if let (Some(first), Some(last)) = (common(lo, true), common(hi, false)) {
                out.push(Overlap {
                    a_field: ra.field.clone(),
                    b_field: rb.field.clone(),
                    first: format_address(ra.family, first),
                    last: format_address(ra.family, last),
                    kind: overlap_kind(&a, ra, &b, rb),
                });
            }
        }
    }
    Ok(out)
}

/// What sharing addresses means for two ranges: the one verdict `check` and the playground
/// both show.
fn overlap_kind(a: &Network, ra: &Range, b: &Network, rb: &Range) -> OverlapKind {
    if a.network_name != b.network_name {
        OverlapKind::SeparateNetworks
    } else if ra.pool_name(&a.network_name) == rb.pool_name(&b.network_name) {
        OverlapKind::SamePool
    } else if a.overlapping && b.overlapping {
        OverlapKind::Protected
    } else {
        OverlapKind::Unprotected
    }
}

pub fn range_map(
    request: &PlanRequest,
    range_index: u32,
    from: Option<&str>,
    to: Option<&str>,
    buckets: u32,
) -> Result<Vec<MapBucket>, IpamError> {
    let network = Network::parse(&request.network)?;
    let range = network.ranges.get(range_index as usize).ok_or_else(|| {
        IpamError::InvalidConfig(FieldError {
            field: "range-index".into(),
            message: format!(
                "{range_index} is out of bounds: the config has {} ranges",
                network.ranges.len()
            ),
        })
    })?;
    let bound = |text: Option<&str>, default: u128, name: &str| -> Result<u128, IpamError> {
        match text {
            None => Ok(default),
            Some(text) => match parse_address(text) {
                Some((f, a)) if range.contains(f, a) => Ok(a),
                _ => Err(IpamError::InvalidConfig(FieldError {
                    field: name.into(),
                    message: format!("{text} is not an address inside {}", range.cidr()),
                })),
            },
        }
    };
    let first = bound(from, range.network, "from")?;
    let last = bound(to, range.broadcast, "to")?;
    if first > last {
        return Err(IpamError::InvalidConfig(FieldError {
            field: "from".into(),
            message: "is after `to`".into(),
        }));
    }
    let (pool, persistent) = Taken::read(request)?.pools(range);
    let span = last - first; // addresses - 1
    let count = (buckets.clamp(1, MAX_BUCKETS) as u128).min(span.saturating_add(1));
    // Buckets differ in size by at most one address; the first `extra` get one more.
    let total = span.saturating_add(1);
    let (size, extra) = (total / count, total % count);
    let mut out = Vec::with_capacity(count as usize);
    let mut start = first;
    for i in 0..count {
        let width = size + u128::from(i < extra);
        let end = if i + 1 == count { last } else { start + width - 1 };
        let (free, taken, excluded, reserved) = pool.census(start, end);
        // The persistent addresses are among the taken ones: what is left is held by pods.
        let (_, kept, _, _) = persistent.census(start, end);
        out.push(MapBucket {
            first: range.format(start),
            last: range.format(end),
            allocatable: free.to_string(),
            allocated: (taken - kept).to_string(),
            persistent: kept.to_string(),
            excluded: excluded.to_string(),
            reserved: reserved.to_string(),
            has_gateway: network
                .gateway
                .is_some_and(|(f, g)| f == range.family && g >= start && g <= end),
        });
        if end == last {
            break;
        }
        start = end + 1;
    }
    Ok(out)
}
