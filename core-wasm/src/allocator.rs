//! Allocation against a store: read, decide, write conditioned on what was read, retry.
//!
//! This is the whole concurrency story. No lock is held across calls: every pool write names
//! the version it was computed from and loses cleanly if another writer got there first; the
//! loser re-reads and decides again (the host paces retries with jitter). For overlapping
//! ranges, an address is first reserved network-wide with a create-only-if-absent write, so
//! two pools covering the same address can never both hand it out.
//!
//! Order of writes, chosen so that a crash at any point never duplicates an address:
//! ADD reserves the address, then writes the pool (a crash in between leaves a reservation
//! with no pool entry: the address is wasted until cleanup, never doubly used). DEL writes
//! the pool, then drops the reservation, for the same reason.

use std::collections::BTreeSet;

use crate::addr::parse_address;
use crate::network::{Network, describe};
use crate::range::Range;
use crate::types::{
    AllocateRequest, HeldLease, IpamError, Lease, NetworkConfig, Owner, PoolEdit, PoolRef, Slot,
    Store, StoreError,
};

fn pool_ref(network: &Network, range: &Range) -> PoolRef {
    PoolRef {
        name: range.pool_name(&network.network_name),
        range: range.cidr(),
        network_name: network.network_name.clone(),
    }
}

fn lease(range: &Range, address: u128) -> Lease {
    Lease {
        address: range.format(address),
        cidr: format!("{}/{}", range.format(address), range.prefix),
        field: range.field.clone(),
        range: range.cidr(),
    }
}

/// A pool as read: its version and decoded allocations.
struct Read {
    version: String,
    slots: Vec<(u128, Owner)>,
}

fn read(store: &mut dyn Store, pool: &PoolRef, range: &Range) -> Result<Read, IpamError> {
    let snapshot = store.read_pool(pool)?;
    let mut slots = Vec::with_capacity(snapshot.slots.len());
    for slot in snapshot.slots {
        let address = range.address_of(&slot.offset).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "pool {}: allocation key {} is not an offset inside {}",
                pool.name, slot.offset, pool.range
            ))
        })?;
        slots.push((address, slot.owner));
    }
    Ok(Read { version: snapshot.version, slots })
}

fn contention(pool: &PoolRef) -> IpamError {
    IpamError::Contention(format!(
        "pool {}: too many concurrent writers, gave up retrying; try again later",
        pool.name
    ))
}

fn holder_text(owner: &Owner) -> String {
    if owner.podref.is_empty() {
        format!("container {} ({})", owner.container_id, owner.ifname)
    } else {
        format!("pod {} (container {}, {})", owner.podref, owner.container_id, owner.ifname)
    }
}

/// Allocates in one range. Returns the lease and whether this call created it.
fn allocate_in(
    store: &mut dyn Store,
    network: &Network,
    range: &Range,
    owner: &Owner,
    requested: Option<u128>,
    sticky: bool,
) -> Result<(Lease, bool), IpamError> {
    let pool = pool_ref(network, range);
    // Addresses another range of this network holds (overlapping reservations).
    let mut held_elsewhere: BTreeSet<u128> = BTreeSet::new();
    // The reservation this call holds, kept across lost pool writes: while it is ours, other
    // writers skip that address, and a retry that picks it again needs no new transaction.
    let mut reserved: Option<u128> = None;
    let mut attempt = 0;
    let result = loop {
        let current = match read(store, &pool, range) {
            Ok(current) => current,
            Err(error) => break Err(error),
        };
        if let Some((address, _)) = current.slots.iter().find(|(_, o)| o.same_attachment(owner)) {
            break Ok((lease(range, *address), false)); // idempotent ADD
        }
        let handover = if sticky && !owner.podref.is_empty() {
            current
                .slots
                .iter()
                .find(|(_, o)| o.podref == owner.podref && o.ifname == owner.ifname)
                .cloned()
        } else {
            None
        };
        let address = match (&handover, requested) {
            (Some((address, _)), _) => *address,
            (None, Some(wanted)) => {
                let pool_state = range.pool(current.slots.iter().map(|(a, _)| *a));
                if let Err(reason) = pool_state.check(wanted) {
                    let mut message = format!(
                        "requested address {} in {} is {}",
                        range.format(wanted),
                        range.cidr(),
                        describe(reason)
                    );
                    if let Some((_, holder)) = current.slots.iter().find(|(a, _)| *a == wanted) {
                        message.push_str(&format!(" by {}", holder_text(holder)));
                    }
                    break Err(IpamError::AddressUnavailable(message));
                }
                wanted
            }
            (None, None) => {
                let pool_state = range.pool(
                    current.slots.iter().map(|(a, _)| *a).chain(held_elsewhere.iter().copied()),
                );
                match pool_state.lowest_free() {
                    Some(address) => address,
                    None => {
                        break Err(IpamError::Exhausted(format!(
                            "no free address left in {} ({})",
                            range.field,
                            range.cidr()
                        )));
                    }
                }
            }
        };
        let text = range.format(address);

        if network.overlapping && reserved != Some(address) {
            if let Some(previous) = reserved.take() {
                if let Err(error) =
                    store.release_address(&network.network_name, &range.format(previous), owner)
                {
                    break Err(error.into());
                }
            }
            if let Some((_, previous)) = &handover {
                if let Err(error) = store.release_address(&network.network_name, &text, previous) {
                    break Err(error.into());
                }
            }
            match store.reserve_address(&network.network_name, &text, owner) {
                Err(error) => break Err(error.into()),
                Ok(None) => reserved = Some(address),
                Ok(Some(holder)) => {
                    if requested.is_some() || handover.is_some() {
                        break Err(IpamError::AddressUnavailable(format!(
                            "address {text} is reserved in network `{}` by {}",
                            network.network_name,
                            holder_text(&holder)
                        )));
                    }
                    held_elsewhere.insert(address);
                    continue;
                }
            }
        }

        let edit = PoolEdit::Claim(Slot { offset: range.offset_of(address), owner: owner.clone() });
        match store.write_pool(&pool, &current.version, &[edit]) {
            Ok(()) => {
                reserved = None; // now backed by the pool entry
                break Ok((lease(range, address), true));
            }
            Err(StoreError::Conflict) => {
                if !store.pause_before_retry(attempt) {
                    break Err(contention(&pool));
                }
                attempt += 1;
            }
            Err(error) => break Err(error.into()),
        }
    };
    // A reservation not backed by a pool entry is given back on every failure path.
    if let Some(address) = reserved {
        let _ = store.release_address(&network.network_name, &range.format(address), owner);
    }
    result
}

/// Removes the allocations `select` picks from one range's pool; returns what was freed.
fn free_in(
    store: &mut dyn Store,
    network: &Network,
    range: &Range,
    select: &dyn Fn(&Owner) -> bool,
) -> Result<Vec<HeldLease>, IpamError> {
    let pool = pool_ref(network, range);
    let mut attempt = 0;
    loop {
        let current = read(store, &pool, range)?;
        let doomed: Vec<(u128, Owner)> =
            current.slots.into_iter().filter(|(_, o)| select(o)).collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let edits: Vec<PoolEdit> =
            doomed.iter().map(|(a, _)| PoolEdit::Free(range.offset_of(*a))).collect();
        match store.write_pool(&pool, &current.version, &edits) {
            Ok(()) => {
                if network.overlapping {
                    for (address, owner) in &doomed {
                        store.release_address(
                            &network.network_name,
                            &range.format(*address),
                            owner,
                        )?;
                    }
                }
                return Ok(doomed
                    .into_iter()
                    .map(|(a, owner)| HeldLease { lease: lease(range, a), owner })
                    .collect());
            }
            Err(StoreError::Conflict) => {
                if !store.pause_before_retry(attempt) {
                    return Err(contention(&pool));
                }
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Maps requested addresses to the ranges that contain them.
fn route_requests(network: &Network, requested: &[String]) -> Result<Vec<Option<u128>>, IpamError> {
    let mut per_range = vec![None; network.ranges.len()];
    for text in requested {
        let bare = text.trim().split('/').next().unwrap_or_default();
        let (family, address) = parse_address(bare).ok_or_else(|| {
            IpamError::AddressUnavailable(format!("requested address {text} is not an IP address"))
        })?;
        let index = network.range_containing(family, address).ok_or_else(|| {
            IpamError::AddressUnavailable(format!(
                "requested address {text} is outside every configured range"
            ))
        })?;
        if per_range[index].is_some() {
            return Err(IpamError::AddressUnavailable(format!(
                "two requested addresses fall into {} ({}); one per range",
                network.ranges[index].field,
                network.ranges[index].cidr()
            )));
        }
        per_range[index] = Some(address);
    }
    Ok(per_range)
}

/// One address from each range, or nothing: a failure releases what this call took.
pub fn allocate(
    store: &mut dyn Store,
    config: &NetworkConfig,
    request: &AllocateRequest,
) -> Result<Vec<Lease>, IpamError> {
    let network = Network::parse(config)?;
    let requested = route_requests(&network, &request.requested)?;
    let mut leases = Vec::with_capacity(network.ranges.len());
    let mut taken_here: Vec<usize> = Vec::new();
    for (i, range) in network.ranges.iter().enumerate() {
        match allocate_in(store, &network, range, &request.owner, requested[i], request.sticky) {
            Ok((lease, created)) => {
                if created {
                    taken_here.push(i);
                }
                leases.push(lease);
            }
            Err(error) => {
                for &j in &taken_here {
                    let _ = free_in(store, &network, &network.ranges[j], &|o| {
                        o.same_attachment(&request.owner)
                    });
                }
                return Err(error);
            }
        }
    }
    Ok(leases)
}

pub fn release(
    store: &mut dyn Store,
    config: &NetworkConfig,
    owner: &Owner,
) -> Result<Vec<Lease>, IpamError> {
    let network = Network::parse(config)?;
    let mut freed = Vec::new();
    for range in &network.ranges {
        freed.extend(
            free_in(store, &network, range, &|o| o.same_attachment(owner))?
                .into_iter()
                .map(|h| h.lease),
        );
    }
    Ok(freed)
}

pub fn leases_of(
    store: &mut dyn Store,
    config: &NetworkConfig,
    owner: &Owner,
) -> Result<Vec<Lease>, IpamError> {
    let network = Network::parse(config)?;
    let mut found = Vec::new();
    for range in &network.ranges {
        let current = read(store, &pool_ref(&network, range), range)?;
        found.extend(
            current
                .slots
                .iter()
                .filter(|(_, o)| o.same_attachment(owner))
                .map(|(a, _)| lease(range, *a)),
        );
    }
    Ok(found)
}

pub fn collect_garbage(
    store: &mut dyn Store,
    config: &NetworkConfig,
    keep: &[Owner],
) -> Result<Vec<HeldLease>, IpamError> {
    let network = Network::parse(config)?;
    let mut freed = Vec::new();
    for range in &network.ranges {
        freed.extend(free_in(store, &network, range, &|o| {
            !keep.iter().any(|k| k.same_attachment(o))
        })?);
    }
    Ok(freed)
}

pub fn list_leases(
    store: &mut dyn Store,
    config: &NetworkConfig,
) -> Result<Vec<HeldLease>, IpamError> {
    let network = Network::parse(config)?;
    let mut all = Vec::new();
    for range in &network.ranges {
        let current = read(store, &pool_ref(&network, range), range)?;
        all.extend(
            current.slots.into_iter().map(|(a, owner)| HeldLease { lease: lease(range, a), owner }),
        );
    }
    Ok(all)
}
