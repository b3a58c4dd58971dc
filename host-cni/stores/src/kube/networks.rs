//! Where the Kubernetes store keeps the CNI network of each allocation (the owner's
//! `cni-network`, the `name` of the network config), which Whereabouts' objects have no field
//! for.
//!
//! Not in `spec`: Whereabouts' CRDs, and ours (derived from the same fields), are structural,
//! so the API server prunes any field they do not declare — a `cniNetwork` beside `id` would be
//! dropped on a cluster that kept Whereabouts' CRDs. Annotations survive both CRDs, and
//! Whereabouts' own writes: it patches `spec.allocations` and leaves `metadata` alone.
//!
//! - An `IPPool` carries [`POOL_ANNOTATION`]: `{"<cni network>": {"<offset>": "<check>"}}`,
//!   one entry per allocation whose owner has a CNI network (Whereabouts' allocations have
//!   none and get no entry). The check is a 32-bit FNV-1a of the allocation's container id and
//!   ifname: Whereabouts frees and re-allocates offsets without touching the annotation, so an
//!   entry counts only while the allocation at its offset is the attachment it was written
//!   for; stale entries read as "" and are dropped with our next write.
//! - An `OverlappingRangeIPReservation` carries [`RESERVATION_ANNOTATION`]: the network's name.
//!
//! The limit: Kubernetes refuses an object whose annotations (keys and values together) exceed
//! 256 KiB. An entry costs about 20 bytes (`"12345":"89abcdef",`, plus each network's name
//! once), so some 12,000 allocations fit — as many as an IPPool can hold at all within etcd's
//! default request limit of 1.5 MiB (about 120 bytes per allocation), though the annotation
//! takes about a sixth of that room. When the annotation would not fit, the store writes the
//! pool without it and logs a warning: the allocations then read back with CNI network "",
//! which CNI GC treats as belonging to whichever network collects garbage.

use std::collections::BTreeMap;

use super::crd::IPAllocation;

/// The IPPool annotation holding the CNI networks of its allocations.
pub const POOL_ANNOTATION: &str = "hereabouts.io/cni-networks";
/// The OverlappingRangeIPReservation annotation holding its holder's CNI network.
pub const RESERVATION_ANNOTATION: &str = "hereabouts.io/cni-network";
/// Kubernetes' limit on an object's annotations, keys and values together
/// (apimachinery's `TotalAnnotationSizeLimitB`).
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// The CNI network of each allocation of one pool, by offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolNetworks {
    by_offset: BTreeMap<String, String>,
}

/// The pool annotation is not what we write.
#[derive(Debug, thiserror::Error)]
#[error(
    "annotation {POOL_ANNOTATION} is not a map of CNI network to offset to check: {0}; \
     remove it to go on (`kubectl annotate ippool NAME {POOL_ANNOTATION}-`: the CNI networks of \
     the pool's allocations are then unknown)"
)]
pub struct Unreadable(serde_json::Error);

/// The pool annotation would push the object's annotations over [`ANNOTATIONS_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the CNI networks of {entries} allocations would make the annotations {bytes} bytes, over Kubernetes' limit of {ANNOTATIONS_LIMIT}"
)]
pub struct TooLarge {
    pub entries: usize,
    pub bytes: usize,
}

type Encoded = BTreeMap<String, BTreeMap<String, String>>;

impl PoolNetworks {
    /// Reads the annotation (if any) against the allocations it describes; an entry whose
    /// allocation is gone or held by another attachment now is left out.
    pub fn read(
        annotations: Option<&BTreeMap<String, String>>,
        allocations: &BTreeMap<String, IPAllocation>,
    ) -> Result<Self, Unreadable> {
        let Some(text) = annotations.and_then(|a| a.get(POOL_ANNOTATION)) else {
            return Ok(Self::default());
        };
        let encoded: Encoded = serde_json::from_str(text).map_err(Unreadable)?;
        let mut by_offset = BTreeMap::new();
        for (network, entries) in encoded {
            for (offset, written_for) in entries {
                if allocations.get(&offset).is_some_and(|a| check(&a.id, &a.ifname) == written_for)
                {
                    by_offset.insert(offset, network.clone());
                }
            }
        }
        Ok(Self { by_offset })
    }

    /// The CNI network of the allocation at `offset`; "" when unknown.
    pub fn of(&self, offset: &str) -> &str {
        self.by_offset.get(offset).map_or("", String::as_str)
    }

    /// Records the network of the allocation now at `offset` ("" forgets it).
    pub fn set(&mut self, offset: &str, network: &str) {
        if network.is_empty() {
            self.by_offset.remove(offset);
        } else {
            self.by_offset.insert(offset.to_string(), network.to_string());
        }
    }

    /// Writes the annotation for `allocations` into `annotations` (removing it when no entry
    /// is left). When it would not fit, the annotation is removed and the error says how big
    /// it would have been.
    pub fn write(
        &self,
        annotations: &mut BTreeMap<String, String>,
        allocations: &BTreeMap<String, IPAllocation>,
    ) -> Result<(), TooLarge> {
        annotations.remove(POOL_ANNOTATION);
        let mut encoded = Encoded::new();
        let mut entries = 0;
        for (offset, network) in &self.by_offset {
            if let Some(allocation) = allocations.get(offset) {
                encoded
                    .entry(network.clone())
                    .or_default()
                    .insert(offset.clone(), check(&allocation.id, &allocation.ifname));
                entries += 1;
            }
        }
        if encoded.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_string(&encoded).expect("a map of strings serialises");
        let others: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        let bytes = others + POOL_ANNOTATION.len() + text.len();
        if bytes > ANNOTATIONS_LIMIT {
            return Err(TooLarge { entries, bytes });
        }
        annotations.insert(POOL_ANNOTATION.to_string(), text);
        Ok(())
    }
}

/// Which attachment an entry was written for: FNV-1a (32 bits) of container id and ifname.
fn check(container_id: &str, ifname: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(id: &str) -> IPAllocation {
        IPAllocation { id: id.into(), podref: format!("ns/{id}"), ifname: "net1".into() }
    }

    fn pool(entries: &[(&str, &str)]) -> BTreeMap<String, IPAllocation> {
        entries.iter().map(|(offset, id)| (offset.to_string(), allocation(id))).collect()
    }

    #[test]
    fn check_is_fnv1a_of_id_and_ifname() {
        // FNV-1a 32 of "" is the offset basis; of "a" is e40c292c (the published vectors).
        let mut hash: u32 = 0x811c_9dc5;
        hash ^= u32::from(b'a');
        hash = hash.wrapping_mul(0x0100_0193);
        assert_eq!(format!("{hash:08x}"), "e40c292c");
        assert_ne!(check("c1", "net1"), check("c1", "net2"));
        assert_ne!(check("c1n", "et1"), check("c1", "net1"), "the separator counts");
    }

    #[test]
    fn round_trip_grouped_by_network() {
        let allocations = pool(&[("1", "c1"), ("2", "c2"), ("3", "c3")]);
        let mut networks = PoolNetworks::default();
        networks.set("1", "blue");
        networks.set("3", "blue");
        networks.set("2", "red");
        let mut annotations = BTreeMap::from([("example.com/x".to_string(), "y".to_string())]);
        networks.write(&mut annotations, &allocations).unwrap();
        let text = &annotations[POOL_ANNOTATION];
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["blue"].as_object().unwrap().len(), 2);
        assert_eq!(value["red"]["2"], check("c2", "net1"));
        let back = PoolNetworks::read(Some(&annotations), &allocations).unwrap();
        assert_eq!(back, networks);
        assert_eq!((back.of("1"), back.of("2"), back.of("9")), ("blue", "red", ""));
        assert_eq!(annotations["example.com/x"], "y", "other annotations kept");
    }

    #[test]
    fn an_entry_counts_only_for_the_attachment_it_was_written_for() {
        let mut networks = PoolNetworks::default();
        networks.set("1", "blue");
        networks.set("2", "blue");
        let mut annotations = BTreeMap::new();
        networks.write(&mut annotations, &pool(&[("1", "c1"), ("2", "c2")])).unwrap();
        // Whereabouts freed offset 1 and handed offset 2 to another container meanwhile.
        let now = pool(&[("2", "c-whereabouts")]);
        let read = PoolNetworks::read(Some(&annotations), &now).unwrap();
        assert_eq!((read.of("1"), read.of("2")), ("", ""));
        read.write(&mut annotations, &now).unwrap();
        assert!(!annotations.contains_key(POOL_ANNOTATION), "no entry left: no annotation");
    }

    #[test]
    fn an_unreadable_annotation_is_an_error_naming_it() {
        let annotations = BTreeMap::from([(POOL_ANNOTATION.to_string(), "blue".to_string())]);
        let error = PoolNetworks::read(Some(&annotations), &pool(&[])).unwrap_err();
        assert!(error.to_string().contains(POOL_ANNOTATION), "{error}");
    }

    #[test]
    fn over_the_annotation_limit_the_annotation_is_left_out() {
        // 64-character container ids and a long network name, as a big pool would have.
        let allocations: BTreeMap<String, IPAllocation> =
            (1..=14_000).map(|o| (o.to_string(), allocation(&format!("{o:064}")))).collect();
        let mut networks = PoolNetworks::default();
        for offset in allocations.keys() {
            networks.set(offset, "a-network-name");
        }
        let mut annotations = BTreeMap::from([(POOL_ANNOTATION.to_string(), "old".to_string())]);
        let error = networks.write(&mut annotations, &allocations).unwrap_err();
        assert_eq!(error.entries, 14_000);
        assert!(error.bytes > ANNOTATIONS_LIMIT);
        assert!(annotations.is_empty(), "the stale annotation is not left behind either");
        // 12,000 fit.
        let fewer: BTreeMap<String, IPAllocation> =
            allocations.into_iter().filter(|(o, _)| o.parse::<u32>().unwrap() <= 12_000).collect();
        networks.write(&mut annotations, &fewer).unwrap();
        let bytes = annotations[POOL_ANNOTATION].len();
        assert!(bytes < ANNOTATIONS_LIMIT, "{bytes}");
        println!("12,000 allocations of one CNI network: annotation of {bytes} bytes");
    }
}
