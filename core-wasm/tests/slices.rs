//! Node slices (`node_slice_size`): the cut of the range, the NodeSlicePool's and the slice
//! pools' names, and allocation inside a node's slice — checked against Whereabouts' own
//! expectations (pkg/iphelpers `TestDivideRangeBySize`, pkg/storage/kubernetes `IPPoolName`).

use hereabouts_core::allocator::{allocate, leases_of, release};
use hereabouts_core::config::read_config;
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::slice::{on_node_slice, parse_size, slicing};
use hereabouts_core::types::{AllocateRequest, IpamError, NetworkConfig, Owner};

fn network(ipam: &str) -> NetworkConfig {
    read_config(ipam).unwrap_or_else(|e| panic!("{ipam}: {e:?}")).network
}

fn owner(i: usize) -> Owner {
    Owner::new(&format!("ctr-{i}"), "eth0", &format!("ns/pod-{i}")).in_cni_network("blue")
}

fn add(store: &mut MemoryStore, network: &NetworkConfig, i: usize) -> Result<String, IpamError> {
    let request = AllocateRequest { owner: owner(i), ..Default::default() };
    allocate(store, network, &request).map(|l| l[0].cidr.clone())
}

#[test]
fn the_range_is_cut_as_whereabouts_divides_it() {
    for (range, size, expected) in [
        ("10.0.0.0/8", "/8", vec!["10.0.0.0/8"]),
        (
            "10.0.0.0/8",
            "/10",
            vec!["10.0.0.0/10", "10.64.0.0/10", "10.128.0.0/10", "10.192.0.0/10"],
        ),
        ("10.0.0.0/8", "10", vec!["10.0.0.0/10", "10.64.0.0/10", "10.128.0.0/10", "10.192.0.0/10"]),
        (
            "10.0.0.0/8",
            "/11",
            vec![
                "10.0.0.0/11",
                "10.32.0.0/11",
                "10.64.0.0/11",
                "10.96.0.0/11",
                "10.128.0.0/11",
                "10.160.0.0/11",
                "10.192.0.0/11",
                "10.224.0.0/11",
            ],
        ),
        ("10.0.0.0/10", "/12", vec!["10.0.0.0/12", "10.16.0.0/12", "10.32.0.0/12", "10.48.0.0/12"]),
        // Host bits are masked first, as Whereabouts' LoadIPAMConfig writes `ipNet.String()`.
        ("192.168.2.225/27", "/28", vec!["192.168.2.224/28", "192.168.2.240/28"]),
        ("fd00::/120", "/122", vec!["fd00::/122", "fd00::40/122", "fd00::80/122", "fd00::c0/122"]),
    ] {
        let config = network(&format!(r#"{{"range": "{range}", "node_slice_size": "{size}"}}"#));
        let cut = slicing(&config, "blue-net").unwrap();
        assert_eq!(cut.slices, expected, "{range} by {size}");
        assert_eq!(cut.slice_size, size, "spec.sliceSize is kept as written");
        assert_eq!(cut.pool_name, "blue-net", "unnamed network: the CNI name");
    }
}

#[test]
fn the_slicing_reports_the_pool_object_and_addresses_per_slice() {
    let config =
        network(r#"{"range": "10.1.0.0/16", "network_name": "blue", "node_slice_size": "/24"}"#);
    let cut = slicing(&config, "ignored").unwrap();
    assert_eq!(cut.pool_name, "blue");
    assert_eq!(cut.range, "10.1.0.0/16");
    assert_eq!(cut.slices.len(), 256);
    assert_eq!(cut.addresses_per_slice, "254");
    let unsliced = network(r#"{"range": "10.1.0.0/16"}"#);
    assert!(
        matches!(slicing(&unsliced, "x"), Err(IpamError::InvalidConfig(e)) if e.field == "node_slice_size")
    );
}

#[test]
fn slice_size_reads_as_go_atoi_after_trimming_one_slash() {
    assert_eq!(parse_size("/28"), Some(28));
    assert_eq!(parse_size("28"), Some(28));
    assert_eq!(parse_size("+28"), Some(28));
    assert_eq!(parse_size("028"), Some(28));
    assert_eq!(parse_size("-3"), Some(-3));
    assert_eq!(parse_size("//28"), None);
    assert_eq!(parse_size(" 28"), None);
    assert_eq!(parse_size(""), None);
    assert_eq!(parse_size("/"), None);
}

#[test]
fn a_node_allocates_lowest_free_inside_its_slice_from_its_own_pool() {
    for mut store in [MemoryStore::new(), MemoryStore::whole_pools()] {
        let config = network(
            r#"{"range": "10.0.0.0/24", "network_name": "blue", "node_slice_size": "/28"}"#,
        );
        let a = on_node_slice(&config, "node-a", "10.0.0.16/28").unwrap();
        let b = on_node_slice(&config, "node-b", "10.0.0.0/28").unwrap();
        // The pod's address carries the range's prefix, not the slice's (Whereabouts' result).
        assert_eq!(add(&mut store, &a, 0).unwrap(), "10.0.0.17/24");
        assert_eq!(add(&mut store, &a, 1).unwrap(), "10.0.0.18/24");
        assert_eq!(add(&mut store, &b, 2).unwrap(), "10.0.0.1/24");
        // Whereabouts' pool names and ranges, offsets from the slice's network address.
        let pool = &store.pools["blue-node-a-10.0.0.16-28"];
        assert_eq!(pool.range, "10.0.0.16/28");
        assert_eq!(pool.slots.keys().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(store.pools["blue-node-b-10.0.0.0-28"].slots.len(), 1);
        assert_eq!(store.pools.len(), 2);

        // Lowest free inside the slice after a release; the slice's broadcast is never used.
        release(&mut store, &a, &owner(0)).unwrap();
        assert_eq!(add(&mut store, &a, 3).unwrap(), "10.0.0.17/24");
        for i in 4..16 {
            assert_eq!(add(&mut store, &a, i).unwrap(), format!("10.0.0.{}/24", 16 + i - 1));
        }
        match add(&mut store, &a, 16) {
            Err(IpamError::Exhausted(message)) => {
                assert!(message.contains("10.0.0.16/28"), "{message}")
            }
            other => panic!("a full slice is exhausted, got {other:?}"),
        }
        assert_eq!(leases_of(&mut store, &a, &owner(3)).unwrap()[0].address, "10.0.0.17");
    }
}

#[test]
fn unnamed_and_ipv6_slice_pools_are_named_as_whereabouts_names_them() {
    let mut store = MemoryStore::new();
    let config = network(r#"{"range": "10.0.0.0/24", "node_slice_size": "28"}"#);
    add(&mut store, &on_node_slice(&config, "worker-1", "10.0.0.32/28").unwrap(), 0).unwrap();
    let config = network(r#"{"range": "fd00::/120", "node_slice_size": "/124"}"#);
    let got =
        add(&mut store, &on_node_slice(&config, "worker-1", "fd00::/124").unwrap(), 1).unwrap();
    assert_eq!(got, "fd00::1/120");
    let names: Vec<&str> = store.pools.keys().map(String::as_str).collect();
    assert_eq!(names, ["worker-1-10.0.0.32-28", "worker-1-fd00---124"]);
}

#[test]
fn excludes_are_honoured_inside_a_slice() {
    let mut store = MemoryStore::new();
    let config = network(
        r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.16/30"], "node_slice_size": "/28"}"#,
    );
    let a = on_node_slice(&config, "node-a", "10.0.0.16/28").unwrap();
    assert_eq!(add(&mut store, &a, 0).unwrap(), "10.0.0.20/24");
}

#[test]
fn a_slice_that_is_not_the_networks_is_refused() {
    let config = network(r#"{"range": "10.0.0.0/24", "node_slice_size": "/28"}"#);
    for (node, slice, field) in [
        ("node-a", "10.0.0.8/28", "node_slice.slice"),
        ("node-a", "10.0.1.0/28", "node_slice.slice"),
        ("node-a", "10.0.0.0/27", "node_slice.slice"),
        ("node-a", "fd00::/124", "node_slice.slice"),
        ("node-a", "garbage", "node_slice.slice"),
        ("", "10.0.0.0/28", "node_slice.node"),
    ] {
        match on_node_slice(&config, node, slice) {
            Err(IpamError::InvalidConfig(e)) => assert_eq!(e.field, field, "{slice}"),
            other => panic!("{node} {slice}: {other:?}"),
        }
    }
    let plain = network(r#"{"range": "10.0.0.0/24"}"#);
    assert!(on_node_slice(&plain, "node-a", "10.0.0.0/28").is_err());
}

#[test]
fn without_a_slice_the_whole_range_is_one_pool_as_before() {
    // What the local store does: the key is accepted and slices mean nothing on one node.
    let mut store = MemoryStore::new();
    let config = network(r#"{"range": "10.0.0.0/24", "node_slice_size": "/28"}"#);
    assert_eq!(add(&mut store, &config, 0).unwrap(), "10.0.0.1/24");
    assert!(store.pools.contains_key("10.0.0.0-24"));
}

#[test]
fn fewer_slices_than_nodes_is_a_warning_naming_what_would_fit() {
    use hereabouts_core::slice::fit_nodes;
    use hereabouts_core::types::Severity;
    let config = network(r#"{"range": "10.0.0.0/24", "node_slice_size": "/26"}"#);
    // Four slices: four nodes fit, and so do none.
    assert_eq!(fit_nodes(&config, 4).unwrap(), None);
    assert_eq!(fit_nodes(&config, 0).unwrap(), None);
    let finding = fit_nodes(&config, 5).unwrap().expect("5 nodes, 4 slices");
    assert_eq!(finding.rule, "node-slices-fewer-than-nodes");
    assert_eq!(finding.severity, Severity::Warning);
    assert_eq!(finding.field, "node_slice_size");
    assert_eq!(
        finding.message,
        "node_slice_size /26 cuts 10.0.0.0/24 into 4 slices of 62 addresses, fewer than the 5 \
         nodes: 1 node gets no slice, and pods there no address; node_slice_size \"/27\" cuts it \
         into 8 slices of 30 addresses; or a /23 range (such as 10.0.0.0/23) keeps 62 addresses \
         per slice for 8 slices"
    );
    // The suggestion is the largest slice that fits: 9 nodes need 16 slices, /28.
    let nine = fit_nodes(&config, 9).unwrap().unwrap().message;
    assert!(nine.contains("9 nodes: 5 nodes get no slice"), "{nine}");
    assert!(nine.contains("\"/28\" cuts it into 16 slices of 14 addresses"), "{nine}");
    assert!(nine.contains("a /22 range (such as 10.0.0.0/22)"), "{nine}");
    // No slice size fits 100 nodes in a /24 (a /31 slice has no usable address): the range.
    let hundred = fit_nodes(&config, 100).unwrap().unwrap().message;
    assert!(!hundred.contains("node_slice_size \""), "{hundred}");
    assert!(
        hundred.ends_with(
            "a /19 range (such as 10.0.0.0/19) keeps 62 addresses per slice for 128 slices"
        ),
        "{hundred}"
    );
    // Beyond a NodeSlicePool's 16384 slices nothing fits.
    let many = fit_nodes(&config, 20_000).unwrap().unwrap().message;
    assert!(many.ends_with("split the nodes over several networks"), "{many}");
    // IPv6, and a config narrowed to a node's slice still answers for the whole range.
    let v6 = network(r#"{"range": "fd00::/112", "node_slice_size": "/120"}"#);
    let narrowed = on_node_slice(&v6, "n1", "fd00::100/120").unwrap();
    assert_eq!(fit_nodes(&narrowed, 3).unwrap(), None);
    let unsliced = network(r#"{"range": "10.0.0.0/24"}"#);
    assert!(
        matches!(fit_nodes(&unsliced, 3), Err(IpamError::InvalidConfig(e)) if e.field == "node_slice_size")
    );
}
