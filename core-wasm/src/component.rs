//! The component boundary: wit-bindgen's types in, the pure core's types out, and the
//! imported `store` interface presented to the core as a [`crate::types::Store`].
//! Conversions only, each written once as a `From`; no logic lives here.

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

// ---- types shared by both directions ----

impl From<wit::Owner> for core::Owner {
    fn from(o: wit::Owner) -> Self {
        Self {
            container_id: o.container_id,
            ifname: o.ifname,
            podref: o.podref,
            cni_network: o.cni_network,
        }
    }
}

impl From<core::Owner> for wit::Owner {
    fn from(o: core::Owner) -> Self {
        Self {
            container_id: o.container_id,
            ifname: o.ifname,
            podref: o.podref,
            cni_network: o.cni_network,
        }
    }
}

impl From<wit::RangeConfig> for core::RangeConfig {
    fn from(r: wit::RangeConfig) -> Self {
        Self {
            range: r.range,
            range_start: r.range_start,
            range_end: r.range_end,
            exclude: r.exclude,
        }
    }
}

impl From<core::RangeConfig> for wit::RangeConfig {
    fn from(r: core::RangeConfig) -> Self {
        Self {
            range: r.range,
            range_start: r.range_start,
            range_end: r.range_end,
            exclude: r.exclude,
        }
    }
}

impl From<wit::NetworkConfig> for core::NetworkConfig {
    fn from(n: wit::NetworkConfig) -> Self {
        Self {
            range: n.range.map(Into::into),
            ip_ranges: n.ip_ranges.into_iter().map(Into::into).collect(),
            gateway: n.gateway,
            network_name: n.network_name,
            enable_overlapping_ranges: n.enable_overlapping_ranges,
            sticky: n.sticky,
            allocation_error: n
                .allocation_error
                .map(|f| core::FieldError { field: f.field, message: f.message }),
            node_slice_size: n.node_slice_size,
            node_slice: n.node_slice.map(|s| core::NodeSlice { node: s.node, slice: s.slice }),
        }
    }
}

impl From<core::NetworkConfig> for wit::NetworkConfig {
    fn from(n: core::NetworkConfig) -> Self {
        Self {
            range: n.range.map(Into::into),
            ip_ranges: n.ip_ranges.into_iter().map(Into::into).collect(),
            gateway: n.gateway,
            network_name: n.network_name,
            enable_overlapping_ranges: n.enable_overlapping_ranges,
            sticky: n.sticky,
            allocation_error: n.allocation_error.map(Into::into),
            node_slice_size: n.node_slice_size,
            node_slice: n.node_slice.map(|s| wit::NodeSlice { node: s.node, slice: s.slice }),
        }
    }
}

impl From<wit::StoreError> for core::StoreError {
    fn from(e: wit::StoreError) -> Self {
        match e {
            wit::StoreError::Unavailable(m) => Self::Unavailable(m),
            wit::StoreError::Corrupt(m) => Self::Corrupt(m),
            wit::StoreError::Failed(m) => Self::Failed(m),
        }
    }
}

impl From<core::StoreError> for wit::StoreError {
    fn from(e: core::StoreError) -> Self {
        match e {
            core::StoreError::Unavailable(m) => Self::Unavailable(m),
            core::StoreError::Corrupt(m) => Self::Corrupt(m),
            core::StoreError::Failed(m) => Self::Failed(m),
        }
    }
}

impl From<wit_store::Slot> for core::Slot {
    fn from(s: wit_store::Slot) -> Self {
        Self { offset: s.offset, owner: s.owner.into() }
    }
}

impl From<core::Slot> for wit_store::Slot {
    fn from(s: core::Slot) -> Self {
        Self { offset: s.offset, owner: s.owner.into() }
    }
}

impl From<wit_store::Reservation> for core::Reservation {
    fn from(r: wit_store::Reservation) -> Self {
        Self { network_name: r.network_name, address: r.address, owner: r.owner.into() }
    }
}

impl From<core::Reservation> for wit_store::Reservation {
    fn from(r: core::Reservation) -> Self {
        Self { network_name: r.network_name, address: r.address, owner: r.owner.into() }
    }
}

// ---- store answers, into the core ----

impl From<wit_store::PoolView> for core::PoolView {
    fn from(v: wit_store::PoolView) -> Self {
        Self {
            version: v.version,
            summary: v.summary,
            slots: v.slots.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit_store::CommitOutcome> for core::CommitOutcome {
    fn from(o: wit_store::CommitOutcome) -> Self {
        match o {
            wit_store::CommitOutcome::Committed(version) => Self::Committed(version),
            wit_store::CommitOutcome::Stale(view) => Self::Stale(view.into()),
            wit_store::CommitOutcome::Occupied(slot) => Self::Occupied(slot.into()),
            wit_store::CommitOutcome::Reserved(r) => Self::Reserved(r.into()),
        }
    }
}

// ---- core answers, out of the component ----

impl From<core::PoolChange> for wit_store::PoolChange {
    fn from(c: core::PoolChange) -> Self {
        Self {
            version: c.version,
            summary: c.summary,
            edits: c
                .edits
                .into_iter()
                .map(|e| match e {
                    core::PoolEdit::Claim(slot) => wit_store::PoolEdit::Claim(slot.into()),
                    core::PoolEdit::Free(slot) => wit_store::PoolEdit::Free(slot.into()),
                    core::PoolEdit::Reown { slot, to } => {
                        wit_store::PoolEdit::Reown(wit_store::Reown {
                            slot: slot.into(),
                            to: to.into(),
                        })
                    }
                })
                .collect(),
            reservations: c
                .reservations
                .into_iter()
                .map(|e| match e {
                    core::ReservationEdit::Reserve(r) => {
                        wit_store::ReservationEdit::Reserve(r.into())
                    }
                    core::ReservationEdit::Release(r) => {
                        wit_store::ReservationEdit::Release(r.into())
                    }
                })
                .collect(),
        }
    }
}

impl From<core::FieldError> for wit::FieldError {
    fn from(f: core::FieldError) -> Self {
        Self { field: f.field, message: f.message }
    }
}

impl From<core::IpamError> for wit::IpamError {
    fn from(e: core::IpamError) -> Self {
        match e {
            core::IpamError::InvalidConfig(f) => Self::InvalidConfig(f.into()),
            core::IpamError::Exhausted(m) => Self::Exhausted(m),
            core::IpamError::AddressUnavailable(m) => Self::AddressUnavailable(m),
            core::IpamError::Contention(m) => Self::Contention(m),
            core::IpamError::Store(s) => Self::Store(s.into()),
        }
    }
}

impl From<core::Lease> for wit::Lease {
    fn from(l: core::Lease) -> Self {
        Self { address: l.address, cidr: l.cidr, field: l.field, range: l.range }
    }
}

impl From<core::HeldLease> for wit::HeldLease {
    fn from(h: core::HeldLease) -> Self {
        Self { lease: h.lease.into(), owner: h.owner.into() }
    }
}

impl From<core::ConfigReading> for api::ConfigReading {
    fn from(r: core::ConfigReading) -> Self {
        Self {
            network: r.network.into(),
            warnings: r
                .warnings
                .into_iter()
                .map(|w| api::ConfigWarning {
                    rule: w.rule,
                    field: w.field,
                    ignored: w.ignored,
                    reason: w.reason,
                })
                .collect(),
        }
    }
}

impl From<core::ConfigError> for api::ConfigError {
    fn from(e: core::ConfigError) -> Self {
        match e {
            core::ConfigError::Malformed(m) => Self::Malformed(m),
            core::ConfigError::Invalid(p) => Self::Invalid(api::ConfigProblem {
                rule: p.rule,
                field: p.field,
                message: p.message,
            }),
        }
    }
}

impl From<core::RangeReport> for api::RangeReport {
    fn from(r: core::RangeReport) -> Self {
        Self {
            field: r.field,
            range: r.range,
            first: r.first,
            last: r.last,
            capacity: r.capacity,
            free: r.free,
            persistent: r.persistent,
            next: r.next,
        }
    }
}

impl From<core::Finding> for api::Finding {
    fn from(f: core::Finding) -> Self {
        let severity = match f.severity {
            core::Severity::Error => api::Severity::Error,
            core::Severity::Warning => api::Severity::Warning,
        };
        Self { rule: f.rule, severity, field: f.field, message: f.message }
    }
}

impl From<core::Overlap> for api::Overlap {
    fn from(o: core::Overlap) -> Self {
        let kind = match o.kind {
            core::OverlapKind::SamePool => api::OverlapKind::SamePool,
            core::OverlapKind::Protected => api::OverlapKind::Protected,
            core::OverlapKind::Unprotected => api::OverlapKind::Unprotected,
            core::OverlapKind::SeparateNetworks => api::OverlapKind::SeparateNetworks,
        };
        Self { a_field: o.a_field, b_field: o.b_field, first: o.first, last: o.last, kind }
    }
}

impl From<core::MapBucket> for api::MapBucket {
    fn from(b: core::MapBucket) -> Self {
        Self {
            first: b.first,
            last: b.last,
            allocatable: b.allocatable,
            allocated: b.allocated,
            persistent: b.persistent,
            excluded: b.excluded,
            reserved: b.reserved,
            has_gateway: b.has_gateway,
        }
    }
}

impl From<api::PlanRequest> for core::PlanRequest {
    fn from(r: api::PlanRequest) -> Self {
        Self {
            network: r.network.into(),
            allocated: r.allocated,
            persistent: r.persistent,
            preview: r.preview,
        }
    }
}

fn all<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(Into::into).collect()
}

fn answer<T, U: From<T>>(
    result: Result<Vec<T>, core::IpamError>,
) -> Result<Vec<U>, wit::IpamError> {
    result.map(all).map_err(Into::into)
}

// ---- the imported store, as the core sees it ----

struct ImportedStore;

impl core::Store for ImportedStore {
    fn read_pool(
        &mut self,
        pool: &core::PoolRef,
        query: &core::Owner,
    ) -> Result<core::PoolView, core::StoreError> {
        let view = wit_store::read_pool(&pool_ref_out(pool), &query.clone().into())?;
        Ok(view.into())
    }

    fn list_slots(&mut self, pool: &core::PoolRef) -> Result<core::PoolListing, core::StoreError> {
        let listing = wit_store::list_slots(&pool_ref_out(pool))?;
        Ok(core::PoolListing { version: listing.version, slots: all(listing.slots) })
    }

    fn commit(
        &mut self,
        pool: &core::PoolRef,
        query: &core::Owner,
        change: &core::PoolChange,
    ) -> Result<core::CommitOutcome, core::StoreError> {
        let outcome =
            wit_store::commit(&pool_ref_out(pool), &query.clone().into(), &change.clone().into())?;
        Ok(outcome.into())
    }

    fn list_reservations(
        &mut self,
        network_name: &str,
    ) -> Result<Vec<core::Reservation>, core::StoreError> {
        Ok(all(wit_store::list_reservations(network_name)?))
    }

    fn pause_before_retry(&mut self, attempt: u32, ceiling_us: u32) -> bool {
        wit_store::pause_before_retry(attempt, ceiling_us)
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
    fn read_config(ipam: String) -> Result<api::ConfigReading, api::ConfigError> {
        crate::config::read_config(&ipam).map(Into::into).map_err(Into::into)
    }

    fn review_config(ipam: String) -> Vec<api::Finding> {
        all(crate::config::review_config(&ipam))
    }

    fn read_plan_document(text: String) -> Result<api::PlanDocument, api::ConfigError> {
        crate::config::read_plan_document(&text)
            .map(|d| api::PlanDocument {
                reading: d.reading.into(),
                allocated: d.allocated,
                persistent: d.persistent,
            })
            .map_err(Into::into)
    }

    fn allocate(
        network: wit::NetworkConfig,
        request: api::AllocateRequest,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        let request =
            core::AllocateRequest { owner: request.owner.into(), requested: request.requested };
        answer(crate::allocator::allocate(&mut ImportedStore, &network.into(), &request))
    }

    fn release(
        network: wit::NetworkConfig,
        owner: wit::Owner,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        answer(crate::allocator::release(&mut ImportedStore, &network.into(), &owner.into()))
    }

    fn leases_of(
        network: wit::NetworkConfig,
        owner: wit::Owner,
    ) -> Result<Vec<wit::Lease>, wit::IpamError> {
        answer(crate::allocator::leases_of(&mut ImportedStore, &network.into(), &owner.into()))
    }

    fn collect_garbage(
        network: wit::NetworkConfig,
        cni_network: String,
        keep: Vec<wit::Owner>,
    ) -> Result<Vec<wit::HeldLease>, wit::IpamError> {
        let keep: Vec<core::Owner> = all(keep);
        answer(crate::allocator::collect_garbage(
            &mut ImportedStore,
            &network.into(),
            &cni_network,
            &keep,
        ))
    }

    fn list_leases(network: wit::NetworkConfig) -> Result<Vec<wit::HeldLease>, wit::IpamError> {
        answer(crate::allocator::list_leases(&mut ImportedStore, &network.into()))
    }

    fn node_slicing(
        network: wit::NetworkConfig,
        cni_network: String,
    ) -> Result<api::Slicing, wit::IpamError> {
        crate::slice::slicing(&network.into(), &cni_network)
            .map(|s| api::Slicing {
                pool_name: s.pool_name,
                range: s.range,
                slice_size: s.slice_size,
                slices: s.slices,
                addresses_per_slice: s.addresses_per_slice,
            })
            .map_err(Into::into)
    }

    fn fit_nodes(
        network: wit::NetworkConfig,
        nodes: u32,
    ) -> Result<Option<api::Finding>, wit::IpamError> {
        crate::slice::fit_nodes(&network.into(), nodes)
            .map(|f| f.map(Into::into))
            .map_err(Into::into)
    }

    fn on_node_slice(
        network: wit::NetworkConfig,
        node: String,
        slice: String,
    ) -> Result<wit::NetworkConfig, wit::IpamError> {
        crate::slice::on_node_slice(&network.into(), &node, &slice)
            .map(Into::into)
            .map_err(Into::into)
    }

    fn plan(request: api::PlanRequest) -> Result<Vec<api::RangeReport>, wit::IpamError> {
        answer(crate::plan::plan(&request.into()))
    }

    fn validate(network: wit::NetworkConfig) -> Vec<api::Finding> {
        all(crate::plan::validate(&network.into()))
    }

    fn overlaps(
        a: wit::NetworkConfig,
        b: wit::NetworkConfig,
    ) -> Result<Vec<api::Overlap>, wit::IpamError> {
        answer(crate::plan::overlaps(&a.into(), &b.into()))
    }

    fn range_map(
        request: api::PlanRequest,
        range_index: u32,
        from: Option<String>,
        to: Option<String>,
        buckets: u32,
    ) -> Result<Vec<api::MapBucket>, wit::IpamError> {
        answer(crate::plan::range_map(
            &request.into(),
            range_index,
            from.as_deref(),
            to.as_deref(),
            buckets,
        ))
    }
}
