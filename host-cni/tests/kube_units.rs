//! Pure parts of the Kubernetes store, checked by tables: Whereabouts' object names, the CRD
//! types' JSON, and the reconcile/controller rule for whether a pod still uses its address.

use hereabouts::store::kube::crd::*;
use hereabouts::store::kube::pods::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

#[test]
fn names_match_whereabouts() {
    assert_eq!(pool_name("", "10.0.0.0/24"), "10.0.0.0-24");
    assert_eq!(pool_name("blue", "fd00::/64"), "blue-fd00---64");
    assert_eq!(reservation_name("", "fd00::5"), "fd00--5");
    assert_eq!(reservation_name("blue", "10.0.0.5"), "blue-10.0.0.5");
    assert_eq!(network_of_pool("blue-10.0.0.0-24", "10.0.0.0/24").as_deref(), Some("blue"));
    assert_eq!(network_of_pool("10.0.0.0-24", "10.0.0.0/24").as_deref(), Some(""));
    assert_eq!(network_of_pool("other", "10.0.0.0/24"), None);
}

#[test]
fn whereabouts_json_round_trips() {
    let text = r#"{"apiVersion":"whereabouts.cni.cncf.io/v1alpha1","kind":"IPPool","metadata":{"name":"10.0.0.0-24","namespace":"kube-system","resourceVersion":"7"},"spec":{"range":"10.0.0.0/24","allocations":{"1":{"id":"c1","podref":"default/a","ifname":"net1"},"2":{"id":"c2","podref":""}}}}"#;
    let pool: IPPool = serde_json::from_str(text).unwrap();
    assert_eq!(pool.spec.allocations["2"].ifname, "");
    let back = serde_json::to_value(&pool).unwrap();
    assert_eq!(back["spec"]["allocations"]["2"], serde_json::json!({"id": "c2", "podref": ""}));
    let empty: IPPool = serde_json::from_str(
        r#"{"metadata":{"name":"x"},"spec":{"range":"10.0.0.0/24","allocations":null}}"#,
    )
    .unwrap();
    assert!(empty.spec.allocations.is_empty());
    assert_eq!(serde_json::to_value(&empty).unwrap()["spec"]["allocations"], serde_json::json!({}));
}

#[test]
fn crds_have_whereabouts_names_and_scope() {
    let yaml = crds_yaml();
    assert!(yaml.contains("name: ippools.whereabouts.cni.cncf.io"), "{yaml}");
    assert!(yaml.contains("name: overlappingrangeipreservations.whereabouts.cni.cncf.io"));
    assert!(yaml.contains("scope: Namespaced"));
}

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

#[test]
fn verdicts() {
    let status = r#"[{"name":"default/blue","interface":"net1","ips":["10.0.0.2"]},{"name":"cbr0","ips":["10.244.0.5"],"default":true}]"#;
    let running = |annotations: serde_json::Value| {
        pod(
            json!({"metadata": {"name": "a", "namespace": "default", "annotations": annotations}, "status": {"phase": "Running"}}),
        )
    };
    assert!(judge(None, "10.0.0.2").is_free());
    assert!(!judge(Some(&running(json!({NETWORK_STATUS: status}))), "10.0.0.2").is_free());
    assert!(judge(Some(&running(json!({NETWORK_STATUS: status}))), "10.0.0.3").is_free());
    // The default network's addresses do not count.
    assert!(judge(Some(&running(json!({NETWORK_STATUS: status}))), "10.244.0.5").is_free());
    assert!(!judge(Some(&running(json!({}))), "10.0.0.3").is_free());
    assert!(!judge(Some(&running(json!({NETWORK_STATUS: "not json"}))), "10.0.0.3").is_free());
    let pending = pod(json!({"metadata": {"name": "a"}, "status": {"phase": "Pending"}}));
    assert!(!judge(Some(&pending), "10.0.0.3").is_free());
    let unset = pod(json!({"metadata": {"name": "a"}}));
    assert!(!judge(Some(&unset), "10.0.0.3").is_free());
    let done = pod(json!({"metadata": {"name": "a"}, "status": {"phase": "Succeeded"}}));
    assert!(judge(Some(&done), "10.0.0.3").is_free());
    let deleting = pod(
        json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Failed"}}),
    );
    assert!(!judge(Some(&deleting), "10.0.0.3").is_free());
}

#[test]
fn podrefs() {
    assert_eq!(split_podref("ns/a"), Some(("ns", "a")));
    assert_eq!(split_podref(""), None);
    assert_eq!(split_podref("a"), None);
    assert_eq!(split_podref("a/b/c"), None);
}
