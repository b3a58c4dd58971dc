//! The component boundary: wit-bindgen's types in, the pure core's types out, and the
//! imported `store` interface presented to the core as a [`crate::types::Store`].
//! Conversions only; no logic lives here.

use crate::types as core;

wit_bindgen::generate!({
    path: "../wit",
    world: "hereabouts",
});

use exports::hereabouts::ipam::allocator as api;
use hereabouts::ipam::store as wit_store;
use hereabouts::ipam::types as wit;

struct Component;
export!(Component);

// ---- into the core ----

fn owner_in(o: wit::Owner) -> core::Owner {
    core::Owner { container_id: o.container_id, ifname: o.ifname, podref: o.podref }
}

fn range_in(r: wit::RangeConfig) -> core::RangeConfig {
    core::RangeConfig {
        range: r.range,
        range_start: r.range_start,
        range_end: r.range_end,
        exclude: r.exclude,
    }
}

fn network_in(n: wit::NetworkConfig) -> core::NetworkConfig {
    core::NetworkConfig {
        range: n.range.map(range_in),
        ip_ranges: n.ip_ranges.into_iter().map(range_in).collect(),
        gateway: n.gateway,
        network_name: n.network_name,
        enable_overlapping_ranges: n.enable_overlapping_ranges,
    }
}

fn plan_request_in(r: api::PlanRequest) -> core::PlanRequest {
    core::PlanRequest { network: network_in(r.network), allocated: r.allocated, preview: r.preview }
}

fn store_error_in(e: wit::StoreError) -> core::StoreError {
    match e {
        wit::StoreError::Conflict => core::StoreError::Conflict,
        wit::StoreError::Unavailable(m) => core::StoreError::Unavailable(m),
        wit::StoreError::Corrupt(m) => core::StoreError::Corrupt(m),
        wit::StoreError::Failed(m) => core::StoreError::Failed(m),
    }
}

// ---- out of the core ----

fn owner_out(o: core::Owner) -> wit::Owner {
    wit::Owner { container_id: o.container_id, ifname: o.ifname, podref: o.podref }
}

fn store_error_out(e: core::StoreError) -> wit::StoreError {
    match e {
        core::StoreError::Conflict => wit::StoreError::Conflict,
        core::StoreError::Unavailable(m) => wit::StoreError::Unavailable(m),
        core::StoreError::Corrupt(m) => wit::StoreError::Corrupt(m),
        core::StoreError::Failed(m) => wit::StoreError::Failed(m),
    }
}

fn error_out(e: core::IpamError) -> wit::IpamError {
    match e {
        core::IpamError::InvalidConfig(f) => {
            wit::IpamError::InvalidConfig(wit::FieldError { field: f.field, message: f.message })
        }
        core::IpamError::Exhausted(m) => wit::IpamError::Exhausted(m),
        core::IpamError::AddressUnavailable(m) => wit::IpamError::AddressUnavailable(m),
        core::IpamError::Contention(m) => wit::IpamError::Contention(m),
        core::IpamError::Store(s) => wit::IpamError::Store(store_error_out(s)),
    }
}

fn lease_out(l: core::Lease) -> wit::Lease {
    wit::Lease { address: l.address, cidr: l.cidr, field: l.field, range: l.range }
}

fn held_out(h: core::HeldLease) -> wit::HeldLease {
    wit::HeldLease { lease: lease_out(h.lease), owner: owner_out(h.owner) }
}

fn leases_out(
    r: Result<Vec<core::Lease>, core::IpamError>,
) -> Result<Vec<wit::Lease>, wit::IpamError> {
    r.map(|v| v.into_iter().map(lease_out).collect()).map_err(error_out)
}

fn held_leases_out(
    r: Result<Vec<core::HeldLease>, core::IpamError>,
) -> Result<Vec<wit::HeldLease>, wit::IpamError> {
    r.map(|v| v.into_iter().map(held_out).collect()).map_err(error_out)
}

// ---- the imported store, as the core sees it ----

struct ImportedStore;

fn slot_out(s: &core::Slot) -> wit_store::Slot {
    wit_store::Slot { offset: s.offset.clone(), owner: owner_out(s.owner.clone()) }
}

impl core::Store for ImportedStore {
    fn read_pool(&mut self, pool: &core::PoolRef) -> Result<core::PoolSnapshot, core::StoreError> {
        let pool = pool_ref_out(pool);
        let snapshot = wit_store::read_pool(&pool).map_err(store_error_in)?;
        Ok(core::PoolSnapshot {
            version: snapshot.version,
            slots: snapshot
                .slots
                .into_iter()
                .map(|s| core::Slot { offset: s.offset, owner: owner_in(s.owner) })
                .collect(),
        })
    }

    fn write_pool(
        &mut self,
        pool: &core::PoolRef,
        version: &str,
        edits: &[core::PoolEdit],
    ) -> Result<(), core::StoreError> {
        let edits: Vec<wit_store::PoolEdit> = edits
            .iter()
            .map(|e| match e {
                core::PoolEdit::Claim(slot) => wit_store::PoolEdit::Claim(slot_out(slot)),
                core::PoolEdit::Free(offset) => wit_store::PoolEdit::Free(offset.clone()),
            })
            .collect();
        wit_store::write_pool(&pool_ref_out(pool), version, &edits).map_err(store_error_in)
    }

    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &core::Owner,
    ) -> Result<Option<core::Owner>, core::StoreError> {
        wit_store::reserve_address(network_name, address, &owner_out(owner.clone()))
            .map(|holder| holder.map(owner_in))
            .map_err(store_error_in)
    }

    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &core::Owner,
    ) -> Result<(), core::StoreError> {
        wit_store::release_address(network_name, address, &owner_out(owner.clone()))
            .map_err(store_error_in)
    }

    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        wit_store::pause_before_retry(attempt)
    }
}

fn pool_ref_out(p: &core::PoolRef) -> wit_store::PoolRef {
    wit_store::PoolRef {
        name: p.name.clone(),
        range: p.range.clone(),
        network_name: p.network_name.clone(),
    }
}

// ---- the exports ----

impl api::Guest for Component {
    fn allocate(
        network: wit::NetworkConfig,
        request: api::AllocateRequest,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        let request = core::AllocateRequest {
            owner: owner_in(request.owner),
            requested: request.requested,
            sticky: request.sticky,
        };
        leases_out(crate::allocator::allocate(&mut ImportedStore, &network_in(network), &request))
    }

    fn release(
        network: wit::NetworkConfig,
        owner: wit::Owner,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        leases_out(crate::allocator::release(
            &mut ImportedStore,
            &network_in(network),
            &owner_in(owner),
        ))
    }

    fn leases_of(
        network: wit::NetworkConfig,
        owner: wit::Owner,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        leases_out(crate::allocator::leases_of(
            &mut ImportedStore,
            &network_in(network),
            &owner_in(owner),
        ))
    }

    fn collect_garbage(
        network: wit::NetworkConfig,
        keep: Vec<wit::Owner>,
    ) -> Result<Vec<wit::HeldLease>, wit::IpamError> {
        let keep: Vec<core::Owner> = keep.into_iter().map(owner_in).collect();
        held_leases_out(crate::allocator::collect_garbage(
            &mut ImportedStore,
            &network_in(network),
            &keep,
        ))
    }

    fn list_leases(network: wit::NetworkConfig) -> Result<Vec<wit::HeldLease>, wit::IpamError> {
        held_leases_out(crate::allocator::list_leases(&mut ImportedStore, &network_in(network)))
    }

    fn plan(request: api::PlanRequest) -> Result<Vec<api::RangeReport>, wit::IpamError> {
        crate::plan::plan(&plan_request_in(request))
            .map(|reports| {
                reports
                    .into_iter()
                    .map(|r| api::RangeReport {
                        field: r.field,
                        range: r.range,
                        first: r.first,
                        last: r.last,
                        capacity: r.capacity,
                        free: r.free,
                        next: r.next,
                    })
                    .collect()
            })
            .map_err(error_out)
    }

    fn validate(network: wit::NetworkConfig) -> Vec<api::Finding> {
        crate::plan::validate(&network_in(network))
            .into_iter()
            .map(|f| api::Finding {
                rule: f.rule,
                severity: match f.severity {
                    core::Severity::Error => api::Severity::Error,
                    core::Severity::Warning => api::Severity::Warning,
                },
                field: f.field,
                message: f.message,
            })
            .collect()
    }

    fn overlaps(
        a: wit::NetworkConfig,
        b: wit::NetworkConfig,
    ) -> Result<Vec<api::Overlap>, wit::IpamError> {
        crate::plan::overlaps(&network_in(a), &network_in(b))
            .map(|v| {
                v.into_iter()
                    .map(|o| api::Overlap {
                        a_field: o.a_field,
                        b_field: o.b_field,
                        first: o.first,
                        last: o.last,
                    })
                    .collect()
            })
            .map_err(error_out)
    }

    fn range_map(
        request: api::PlanRequest,
        range_index: u32,
        from: Option<String>,
        to: Option<String>,
        buckets: u32,
    ) -> Result<Vec<api::MapBucket>, wit::IpamError> {
        crate::plan::range_map(
            &plan_request_in(request),
            range_index,
            from.as_deref(),
            to.as_deref(),
            buckets,
        )
        .map(|v| {
            v.into_iter()
                .map(|b| api::MapBucket {
                    first: b.first,
                    last: b.last,
                    allocatable: b.allocatable,
                    allocated: b.allocated,
                    excluded: b.excluded,
                    reserved: b.reserved,
                    has_gateway: b.has_gateway,
                })
                .collect()
        })
        .map_err(error_out)
    }
}
