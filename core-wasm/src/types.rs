//! The contract's types as plain Rust, so the pure logic compiles and is tested natively.
//! `component.rs` converts between these and the `wit-bindgen` types, field for field; the
//! WIT file stays the one definition (see wit/hereabouts.wit for each field's meaning).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    pub podref: String,
    /// The CNI network (`name`) of the attachment; "" when unknown.
    pub cni_network: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str, podref: &str) -> Self {
        Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
            podref: podref.into(),
            cni_network: String::new(),
        }
    }

    /// The same owner, recorded as an attachment of CNI network `name`.
    pub fn in_cni_network(mut self, name: &str) -> Self {
        self.cni_network = name.into();
        self
    }

    /// Whereabouts identifies an attachment by container id and interface name.
    pub fn same_attachment(&self, other: &Owner) -> bool {
        self.container_id == other.container_id && self.ifname == other.ifname
    }

    /// The same pod and interface under any container id (a pod's new sandbox): Whereabouts'
    /// `podRef` + `ifName` match. Never true for an unknown podref.
    pub fn same_pod_interface(&self, other: &Owner) -> bool {
        !self.podref.is_empty() && self.podref == other.podref && self.ifname == other.ifname
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeConfig {
    pub range: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    pub range: Option<RangeConfig>,
    pub ip_ranges: Vec<RangeConfig>,
    pub gateway: Option<String>,
    pub network_name: String,
    pub enable_overlapping_ranges: bool,
    /// An ADD of a pod and interface that already hold an address gets it back (default true).
    pub sticky: bool,
    /// Set when the config can hand out no new address, as in Whereabouts (an unparsable
    /// exclude): a new allocation fails with it; a held address, DEL, CHECK and GC work.
    pub allocation_error: Option<FieldError>,
    /// `node_slice_size` as written (`"/28"` or `"28"`), checked by the core; `None` when unset.
    pub node_slice_size: Option<String>,
    /// The node slice this config allocates from (set by `on_node_slice`, never by a reading).
    pub node_slice: Option<NodeSlice>,
}

/// A node and the slice of the range it was given (a NodeSlicePool allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSlice {
    pub node: String,
    /// The slice's CIDR, e.g. `10.0.0.16/28`.
    pub slice: String,
}

/// How a network's range is cut into node slices (see `node-slicing` in the WIT file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slicing {
    /// The NodeSlicePool object's name.
    pub pool_name: String,
    /// Its `spec.range` and `spec.sliceSize`, as Whereabouts writes them.
    pub range: String,
    pub slice_size: String,
    /// Every slice, lowest first (Whereabouts' `status.allocations` order).
    pub slices: Vec<String>,
    /// Decimal count of addresses a pod can get in one slice.
    pub addresses_per_slice: String,
}

/// A value Whereabouts silently ignores (see `config-warning` in the WIT file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub rule: String,
    pub field: String,
    pub ignored: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReading {
    pub network: NetworkConfig,
    pub warnings: Vec<ConfigWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not JSON (CNI 6): serde_json's message with line and column.
    Malformed(String),
    /// A value that is rejected (CNI 7).
    Invalid(ConfigProblem),
}

/// A rejected value: the rule id `check` reports it under, where it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub rule: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Malformed(m) => f.write_str(m),
            ConfigError::Invalid(e) => e.fmt(f),
        }
    }
}

/// `hereabouts plan`'s input, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanDocument {
    pub reading: ConfigReading,
    pub allocated: Vec<String>,
    /// Kept for an IPAMClaim or StatefulSet member with no pod (see `plan-request`).
    pub persistent: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Unavailable(String),
    Corrupt(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamError {
    InvalidConfig(FieldError),
    Exhausted(String),
    AddressUnavailable(String),
    Contention(String),
    Store(StoreError),
}

impl From<FieldError> for IpamError {
    fn from(error: FieldError) -> Self {
        IpamError::InvalidConfig(error)
    }
}

impl From<StoreError> for IpamError {
    fn from(error: StoreError) -> Self {
        IpamError::Store(error)
    }
}

impl std::fmt::Display for IpamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpamError::InvalidConfig(e) => e.fmt(f),
            IpamError::Exhausted(m)
            | IpamError::AddressUnavailable(m)
            | IpamError::Contention(m) => f.write_str(m),
            IpamError::Store(e) => write!(f, "store: {e:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: String,
    pub cidr: String,
    pub field: String,
    pub range: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub lease: Lease,
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRef {
    pub name: String,
    pub range: String,
    pub network_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub offset: String,
    pub owner: Owner,
}

/// See `pool-view` in the WIT file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolView {
    pub version: String,
    /// `Some`: the store keeps summaries and `slots` holds only the query's; `None`: whole pool.
    pub summary: Option<String>,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolListing {
    pub version: String,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolEdit {
    Claim(Slot),
    Free(Slot),
    Reown { slot: Slot, to: Owner },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub network_name: String,
    pub address: String,
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationEdit {
    Reserve(Reservation),
    Release(Reservation),
}

/// See `pool-change` in the WIT file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolChange {
    pub version: String,
    pub summary: String,
    pub edits: Vec<PoolEdit>,
    pub reservations: Vec<ReservationEdit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied; the pool's new version.
    Committed(String),
    Stale(PoolView),
    Occupied(Slot),
    Reserved(Reservation),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocateRequest {
    pub owner: Owner,
    pub requested: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanRequest {
    pub network: NetworkConfig,
    pub allocated: Vec<String>,
    /// Taken but held by no pod; may also be in `allocated` (see `plan-request` in the WIT).
    pub persistent: Vec<String>,
    pub preview: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeReport {
    pub field: String,
    pub range: String,
    pub first: Option<String>,
    pub last: Option<String>,
    pub capacity: String,
    pub free: String,
    pub persistent: String,
    pub next: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub a_field: String,
    pub b_field: String,
    pub first: String,
    pub last: String,
    pub kind: OverlapKind,
}

/// See `overlap-kind` in the WIT file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapKind {
    SamePool,
    Protected,
    Unprotected,
    SeparateNetworks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapBucket {
    pub first: String,
    pub last: String,
    pub allocatable: String,
    pub allocated: String,
    pub persistent: String,
    pub excluded: String,
    pub reserved: String,
    pub has_gateway: bool,
}

/// The storage import, as the pure logic sees it (`interface store` in the WIT file).
pub trait Store {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError>;
    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError>;
    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError>;
    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError>;
    fn pause_before_retry(&mut self, attempt: u32, ceiling_us: u32) -> bool;
}
