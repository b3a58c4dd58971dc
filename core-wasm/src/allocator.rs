//! Allocation against a store: read, decide, commit conditioned on what was read, retry.
//!
//! This is the whole concurrency story. No lock is held across calls: an ADD or DEL is one
//! `read-pool` and one `commit` naming the version it read. The commit carries everything the
//! change needs — the allocation, the pool's new used-space [`Summary`], and the network-wide
//! reservation for overlapping ranges — so a store applies all of it or nothing, and a process
//! killed at any instant leaves nothing half-done on SQLite and etcd. A lost commit answers
//! with the fresh pool (`stale`), and the core decides again; the host only paces the retries.
//!
//! Neither the read nor the commit grows with the pool: the store returns the summary and the
//! slots of the one owner asked about, never the whole pool. Stores that keep no summary
//! (Kubernetes keeps Whereabouts' IPPool as it is) return whole pools, and the core computes
//! the summary from them.
//!
//! What the core trusts: a summary read at a version describes the slots at that version,
//! because both are only ever written together. If it does not (a damaged store, a claimed
//! offset that turns out to be taken), the core rebuilds it from the whole pool and writes the
//! corrected one with its next commit. An address is never handed out twice either way: a
//! claim of a taken offset is refused by the store.

use std::collections::BTreeSet;

use crate::addr::parse_address;
use crate::network::{Network, describe_at};
use crate::pool::Pool;
use crate::range::Range;
use crate::summary::Summary;
use crate::types::{
    AllocateRequest, CommitOutcome, HeldLease, IpamError, Lease, NetworkConfig, Owner, PoolChange,
    PoolEdit, PoolRef, PoolView, Reservation, ReservationEdit, Slot, Store, StoreError,
};

/// Commits attempted against one pool before giving up (CNI 11). Part of the contract: the
/// WIT file's `pause-before-retry` documents it.
pub const MAX_ATTEMPTS: u32 = 100;
/// The most pool edits (and, separately, reservation edits) in one commit (see `commit` in the
/// WIT file): keeps an etcd transaction under its default `--max-txn-ops` of 128.
pub const MAX_EDITS_PER_COMMIT: usize = 16;
/// Backoff before retry `attempt + 1`: full jitter over an exponential ceiling, 2 ms doubling
/// up to 200 ms. The host draws the random wait; the curve is the core's.
pub fn backoff_ceiling_us(attempt: u32) -> u32 {
    2_000u32.saturating_mul(1 << attempt.min(16)).min(200_000)
}

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
        cidr: format!("{}/{}", range.format(address), range.result_prefix()),
        field: range.field.clone(),
        range: range.cidr(),
    }
}

fn holder_text(owner: &Owner) -> String {
    if owner.podref.is_empty() {
        format!("container {} ({})", owner.container_id, owner.ifname)
    } else {
        format!("pod {} (container {}, {})", owner.podref, owner.container_id, owner.ifname)
    }
}

/// A pool as one call sees it: the version read, its used space, and the slots the read
/// returned (the query's, or every slot when `whole`).
struct Current {
    version: String,
    used: Summary,
    slots: Vec<(u128, Slot)>,
}

impl Current {
    /// Decodes a view. A summary that does not decode is rebuilt from the whole pool rather
    /// than trusted or reported: the slots are the truth and the summary only an index.
    fn read(
        store: &mut dyn Store,
        pool: &PoolRef,
        range: &Range,
        view: PoolView,
    ) -> Result<Current, IpamError> {
        let slots = decode_slots(pool, range, view.slots)?;
        match view.summary {
            None => {
                let used = Summary::of_addresses(range, slots.iter().map(|(a, _)| *a));
                Ok(Current { version: view.version, used, slots })
            }
            Some(text) => match Summary::decode(range, &text) {
                Ok(used) => Ok(Current { version: view.version, used, slots }),
                Err(_) => Current::whole(store, pool, range),
            },
        }
    }

    /// Every slot of the pool, and the summary computed from them.
    fn whole(store: &mut dyn Store, pool: &PoolRef, range: &Range) -> Result<Current, IpamError> {
        let listing = store.list_slots(pool)?;
        let view = PoolView { version: listing.version, summary: None, slots: listing.slots };
        Current::read(store, pool, range, view)
    }

    fn held_by(&self, owner: &Owner) -> Option<&(u128, Slot)> {
        self.slots.iter().filter(|(_, s)| s.owner.same_attachment(owner)).min_by_key(|(a, _)| *a)
    }

    /// Whereabouts' `podRef` + `ifName` match: the pod's older sandbox held this address.
    fn held_by_pod(&self, owner: &Owner) -> Option<&(u128, Slot)> {
        self.slots.iter().filter(|(_, s)| s.owner.same_pod_interface(owner)).min_by_key(|(a, _)| *a)
    }
}

fn decode_slots(
    pool: &PoolRef,
    range: &Range,
    slots: Vec<Slot>,
) -> Result<Vec<(u128, Slot)>, IpamError> {
    slots
        .into_iter()
        .map(|slot| {
            let address = range.address_of(&slot.offset).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "pool {}: allocation key {:?} is not an offset inside {}",
                    pool.name, slot.offset, pool.range
                ))
            })?;
            Ok((address, slot))
        })
        .collect()
}

/// Lost commits retried at once on the stale answer's view, before any pause (see
/// [`Retries::after_stale`]). With at most this many writers on one pool at a time, every ADD
/// commits within that many attempts and never waits.
pub const IMMEDIATE_RETRIES: u32 = 16;

/// Counts lost commits against the budget and lets the host pace the next attempt.
struct Retries<'a> {
    pool: &'a PoolRef,
    attempt: u32,
}

impl<'a> Retries<'a> {
    fn new(pool: &'a PoolRef) -> Self {
        Self { pool, attempt: 0 }
    }

    fn gave_up(&self) -> IpamError {
        IpamError::Contention(format!(
            "pool {}: too many concurrent writers, gave up after {} attempts; try again later",
            self.pool.name,
            self.attempt + 1
        ))
    }

    /// Waits the backoff of step `step` (0: up to 2 ms) before the next attempt.
    fn pause(&mut self, store: &mut dyn Store, step: u32) -> Result<(), IpamError> {
        if self.attempt + 1 >= MAX_ATTEMPTS
            || !store.pause_before_retry(self.attempt, backoff_ceiling_us(step))
        {
            return Err(self.gave_up());
        }
        self.attempt += 1;
        Ok(())
    }

    /// The view to retry a lost commit on.
    ///
    /// Every commit is conditioned on the pool's version, so of the writers that decided on
    /// one version exactly one wins, whatever addresses they chose: choosing further up the
    /// free list would leave gaps and win nothing. What a loss can be made is cheap. A stale
    /// answer carries the pool as it is at that instant (the store read it in the refused
    /// transaction), so the retry goes at once on it, with no read and no wait: each round of
    /// N colliding writers commits one of them, and the k-th commits at its k-th attempt. Only
    /// after [`IMMEDIATE_RETRIES`] losses in a row — more writers on the pool than that — does
    /// a retry wait its jittered backoff, and then it reads the pool afresh: a view older than
    /// the wait would lose again for sure.
    fn after_stale(
        &mut self,
        store: &mut dyn Store,
        owner: &Owner,
        view: PoolView,
    ) -> Result<PoolView, IpamError> {
        if self.attempt < IMMEDIATE_RETRIES {
            if self.attempt + 1 >= MAX_ATTEMPTS {
                return Err(self.gave_up());
            }
            self.attempt += 1;
            return Ok(view);
        }
        self.pause(store, self.attempt - IMMEDIATE_RETRIES)?;
        Ok(store.read_pool(self.pool, owner)?)
    }

    /// A refusal that needs no wait (a rebuilt summary) still counts: a store that keeps
    /// refusing must not keep the call alive forever.
    fn count(&mut self) -> Result<(), IpamError> {
        self.attempt += 1;
        if self.attempt >= MAX_ATTEMPTS {
            return Err(IpamError::Store(StoreError::Failed(format!(
                "pool {}: the store kept refusing commits ({} attempts)",
                self.pool.name, self.attempt
            ))));
        }
        Ok(())
    }
}

fn unexpected(pool: &PoolRef, outcome: &CommitOutcome) -> IpamError {
    IpamError::Store(StoreError::Failed(format!(
        "pool {}: the store answered {outcome:?} to a commit that claims and reserves nothing",
        pool.name
    )))
}

fn reserve(network: &Network, range: &Range, address: u128, owner: &Owner) -> Vec<ReservationEdit> {
    if !network.overlapping {
        return Vec::new();
    }
    vec![ReservationEdit::Reserve(Reservation {
        network_name: network.network_name.clone(),
        address: range.format(address),
        owner: owner.clone(),
    })]
}

fn release_reservation(
    network: &Network,
    range: &Range,
    address: u128,
    owner: &Owner,
) -> Option<ReservationEdit> {
    network.overlapping.then(|| {
        ReservationEdit::Release(Reservation {
            network_name: network.network_name.clone(),
            address: range.format(address),
            owner: owner.clone(),
        })
    })
}

/// Allocates in one range. Returns the lease and whether this call changed the store.
fn allocate_in(
    store: &mut dyn Store,
    network: &Network,
    range: &Range,
    owner: &Owner,
    requested: Option<u128>,
    config: &NetworkConfig,
) -> Result<(Lease, bool), IpamError> {
    let pool = pool_ref(network, range);
    let mut retries = Retries::new(&pool);
    // Addresses reserved in the network by other pools (overlapping ranges): skipped.
    let mut held_elsewhere: BTreeSet<u128> = BTreeSet::new();
    let view = store.read_pool(&pool, owner)?;
    let mut current = Current::read(store, &pool, range, view)?;
    loop {
        if let Some((address, _)) = current.held_by(owner) {
            // Idempotent ADD; but a different address asked for must not be dropped silently.
            if let Some(wanted) = requested.filter(|w| w != address) {
                return Err(IpamError::AddressUnavailable(format!(
                    "{} already holds {} in {}; requested {} (DEL it first to change address)",
                    holder_text(owner),
                    range.format(*address),
                    range.cidr(),
                    range.format(wanted)
                )));
            }
            return Ok((lease(range, *address), false));
        }
        let handover = if config.sticky { current.held_by_pod(owner).cloned() } else { None };
        let mut used = current.used.clone();
        let (address, edit) = match (handover, requested) {
            // The pod's new sandbox takes its address back, re-owned (Whereabouts' AssignIP).
            (Some((address, slot)), _) => (address, PoolEdit::Reown { slot, to: owner.clone() }),
            (None, _) if config.allocation_error.is_some() => {
                let error = config.allocation_error.clone().expect("checked");
                return Err(IpamError::InvalidConfig(error));
            }
            (None, requested) => {
                let address = match requested {
                    Some(wanted) => {
                        let state = Pool::from_runs(range, used.runs());
                        if let Err(reason) = state.check(wanted) {
                            return Err(IpamError::AddressUnavailable(format!(
                                "requested address {} in {} is {}",
                                range.format(wanted),
                                range.cidr(),
                                describe_at(network, range, wanted, reason)
                            )));
                        }
                        wanted
                    }
                    None => {
                        let mut blocked = used.clone();
                        for &a in &held_elsewhere {
                            blocked.insert(range.family, a);
                        }
                        Pool::from_runs(range, blocked.runs()).lowest_free().ok_or_else(|| {
                            IpamError::Exhausted(format!(
                                "no free address left in {} ({})",
                                range.field,
                                range.cidr()
                            ))
                        })?
                    }
                };
                used.insert(range.family, address);
                let slot = Slot { offset: range.offset_of(address), owner: owner.clone() };
                (address, PoolEdit::Claim(slot))
            }
        };
        let change = PoolChange {
            version: current.version.clone(),
            summary: used.encode(range),
            edits: vec![edit],
            reservations: reserve(network, range, address, owner),
        };
        match store.commit(&pool, owner, &change)? {
            CommitOutcome::Committed(_) => return Ok((lease(range, address), true)),
            CommitOutcome::Stale(view) => {
                let view = retries.after_stale(store, owner, view)?;
                current = Current::read(store, &pool, range, view)?;
            }
            CommitOutcome::Occupied(_) => {
                // The summary was behind the slots: rebuild it from the whole pool.
                retries.count()?;
                current = Current::whole(store, &pool, range)?;
            }
            CommitOutcome::Reserved(holder) => {
                if requested.is_some() || matches!(change.edits[0], PoolEdit::Reown { .. }) {
                    return Err(IpamError::AddressUnavailable(format!(
                        "address {} is reserved in network `{}` by {}",
                        holder.address,
                        network.network_name,
                        holder_text(&holder.owner)
                    )));
                }
                // Another range of the network holds it: try the next one. Each refusal adds
                // an address, so this ends.
                held_elsewhere.insert(address);
            }
        }
    }
}

/// Frees one owner's slots in one range (DEL): one read and one commit.
fn release_in(
    store: &mut dyn Store,
    network: &Network,
    range: &Range,
    owner: &Owner,
) -> Result<Vec<HeldLease>, IpamError> {
    let pool = pool_ref(network, range);
    let mut retries = Retries::new(&pool);
    let view = store.read_pool(&pool, owner)?;
    let mut current = Current::read(store, &pool, range, view)?;
    let mut freed = Vec::new();
    loop {
        let mine: Vec<(u128, Slot)> = current
            .slots
            .iter()
            .filter(|(_, s)| s.owner.same_attachment(owner))
            .take(MAX_EDITS_PER_COMMIT)
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok(freed);
        }
        let complete = mine.len() < MAX_EDITS_PER_COMMIT;
        let (change, batch) = free_commit(network, range, &current, mine);
        match store.commit(&pool, owner, &change)? {
            CommitOutcome::Committed(_) if complete => {
                freed.extend(batch);
                return Ok(freed);
            }
            CommitOutcome::Committed(_) => {
                // Only damaged data holds this many slots for one attachment: read again for
                // the rest.
                freed.extend(batch);
                let view = store.read_pool(&pool, owner)?;
                current = Current::read(store, &pool, range, view)?;
            }
            CommitOutcome::Stale(view) => {
                let view = retries.after_stale(store, owner, view)?;
                current = Current::read(store, &pool, range, view)?;
            }
            other => return Err(unexpected(&pool, &other)),
        }
    }
}

/// The commit freeing `doomed` (at most [`MAX_EDITS_PER_COMMIT`]) from `current`.
fn free_commit(
    network: &Network,
    range: &Range,
    current: &Current,
    doomed: Vec<(u128, Slot)>,
) -> (PoolChange, Vec<HeldLease>) {
    let mut used = current.used.clone();
    let mut edits = Vec::with_capacity(doomed.len());
    let mut reservations = Vec::new();
    let mut freed = Vec::with_capacity(doomed.len());
    for (address, slot) in doomed {
        used.remove(range.family, address);
        reservations.extend(release_reservation(network, range, address, &slot.owner));
        freed.push(HeldLease { lease: lease(range, address), owner: slot.owner.clone() });
        edits.push(PoolEdit::Free(slot));
    }
    let change = PoolChange {
        version: current.version.clone(),
        summary: used.encode(range),
        edits,
        reservations,
    };
    (change, freed)
}

/// Frees every slot `select` picks from one range's pool, in commits of at most
/// [`MAX_EDITS_PER_COMMIT`] edits, each complete on its own (garbage collection).
fn free_where(
    store: &mut dyn Store,
    network: &Network,
    range: &Range,
    select: &dyn Fn(&Owner) -> bool,
) -> Result<Vec<HeldLease>, IpamError> {
    let pool = pool_ref(network, range);
    let mut retries = Retries::new(&pool);
    let mut freed = Vec::new();
    'listing: loop {
        let mut current = Current::whole(store, &pool, range)?;
        let doomed: Vec<(u128, Slot)> =
            current.slots.iter().filter(|(_, s)| select(&s.owner)).cloned().collect();
        for batch in doomed.chunks(MAX_EDITS_PER_COMMIT) {
            let (change, batch_freed) = free_commit(network, range, &current, batch.to_vec());
            let anyone = Owner::default();
            match store.commit(&pool, &anyone, &change)? {
                CommitOutcome::Committed(version) => {
                    current.version = version;
                    current.used = Summary::decode(range, &change.summary)
                        .expect("the core encoded this summary itself");
                    freed.extend(batch_freed);
                }
                CommitOutcome::Stale(_) => {
                    // A listing is the whole pool: re-read it after a backoff that grows with
                    // each loss, rather than at once.
                    let step = retries.attempt;
                    retries.pause(store, step)?;
                    continue 'listing;
                }
                other => return Err(unexpected(&pool, &other)),
            }
        }
        return Ok(freed);
    }
}

/// Maps requested addresses to the ranges that contain them. The same address asked for twice
/// (podman's `network reload` passes `--ip` and the current address) is one request.
fn route_requests(network: &Network, requested: &[String]) -> Result<Vec<Option<u128>>, IpamError> {
    let mut per_range: Vec<Option<u128>> = vec![None; network.ranges.len()];
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
        match per_range[index] {
            Some(earlier) if earlier == address => {}
            Some(earlier) => {
                return Err(IpamError::AddressUnavailable(format!(
                    "two requested addresses, {} and {text}, fall into {} ({}); one per range",
                    network.ranges[index].format(earlier),
                    network.ranges[index].field,
                    network.ranges[index].cidr()
                )));
            }
            None => per_range[index] = Some(address),
        }
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
        match allocate_in(store, &network, range, &request.owner, requested[i], config) {
            Ok((lease, changed)) => {
                if changed {
                    taken_here.push(i);
                }
                leases.push(lease);
            }
            Err(error) => {
                for &j in &taken_here {
                    // Best effort: the error that stopped us is the one to report.
                    let _ = release_in(store, &network, &network.ranges[j], &request.owner);
                }
                return Err(error);
            }
        }
    }
    Ok(leases)
}

/// Frees the owner's addresses in every range (DEL); freeing nothing is success.
pub fn release(
    store: &mut dyn Store,
    config: &NetworkConfig,
    owner: &Owner,
) -> Result<Vec<Lease>, IpamError> {
    let network = Network::parse_held(config)?;
    let mut freed = Vec::new();
    for range in &network.ranges {
        freed.extend(release_in(store, &network, range, owner)?.into_iter().map(|h| h.lease));
    }
    Ok(freed)
}

/// The owner's addresses (CHECK): one read per range.
pub fn leases_of(
    store: &mut dyn Store,
    config: &NetworkConfig,
    owner: &Owner,
) -> Result<Vec<Lease>, IpamError> {
    let network = Network::parse_held(config)?;
    let mut found = Vec::new();
    for range in &network.ranges {
        let pool = pool_ref(&network, range);
        let view = store.read_pool(&pool, owner)?;
        let slots = decode_slots(&pool, range, view.slots)?;
        found.extend(
            slots
                .iter()
                .filter(|(_, s)| s.owner.same_attachment(owner))
                .map(|(a, _)| lease(range, *a)),
        );
    }
    Ok(found)
}

/// CNI GC: frees the allocations of CNI network `cni_network` (or of no recorded network)
/// whose attachment is not in `keep`.
pub fn collect_garbage(
    store: &mut dyn Store,
    config: &NetworkConfig,
    cni_network: &str,
    keep: &[Owner],
) -> Result<Vec<HeldLease>, IpamError> {
    let network = Network::parse_held(config)?;
    let select = |o: &Owner| {
        (o.cni_network.is_empty() || o.cni_network == cni_network)
            && !keep.iter().any(|k| k.same_attachment(o))
    };
    let mut freed = Vec::new();
    for range in &network.ranges {
        freed.extend(free_where(store, &network, range, &select)?);
    }
    Ok(freed)
}

/// Every allocation of the network's pools.
pub fn list_leases(
    store: &mut dyn Store,
    config: &NetworkConfig,
) -> Result<Vec<HeldLease>, IpamError> {
    let network = Network::parse_held(config)?;
    let mut all = Vec::new();
    for range in &network.ranges {
        let pool = pool_ref(&network, range);
        let listing = store.list_slots(&pool)?;
        let slots = decode_slots(&pool, range, listing.slots)?;
        all.extend(
            slots.into_iter().map(|(a, s)| HeldLease { lease: lease(range, a), owner: s.owner }),
        );
    }
    Ok(all)
}
