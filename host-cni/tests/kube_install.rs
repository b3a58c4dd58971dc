//! `hereabouts install` (the DaemonSet's job) into temporary directories standing in for the
//! host's CNI bin and config directories and the pod's service-account mount.

use std::path::Path;
use std::process::Command;

#[test]
fn install_copies_both_binaries_and_writes_a_usable_flat_file_and_kubeconfig() {
    let root = std::env::temp_dir().join(format!("hereabouts-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (bin, conf, sa) =
        (root.join("host/opt/cni/bin"), root.join("host/etc/cni/net.d"), root.join("sa"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "token-1").unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(sa.join("namespace"), "kube-system\n").unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
            .arg("install")
            .arg(format!("--bin-dir={}", bin.display()))
            .arg(format!("--conf-dir={}", conf.display()))
            .arg("--host-conf-dir=/etc/cni/net.d")
            .arg(format!("--service-account-dir={}", sa.display()))
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env_remove("WHEREABOUTS_NAMESPACE")
            .env("NODENAME", " worker-7.example.com\n")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    run();
    let original = std::fs::read(env!("CARGO_BIN_EXE_hereabouts")).unwrap();
    for name in ["hereabouts", "whereabouts"] {
        assert_eq!(std::fs::read(bin.join(name)).unwrap(), original, "{name}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(bin.join(name)).unwrap().permissions().mode() & 0o777, 0o755);
    }
    let dir = conf.join("whereabouts.d");
    let flat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("whereabouts.conf")).unwrap())
            .unwrap();
    assert_eq!(
        flat,
        serde_json::json!({"datastore": "kubernetes", "configuration_path": "/etc/cni/net.d/whereabouts.d",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"}})
    );
    // The node's name for node slices, as Whereabouts' installer writes it.
    assert_eq!(std::fs::read_to_string(dir.join("nodename")).unwrap(), "worker-7.example.com");
    // The kubeconfig is one the kube client reads, with host paths and the namespace.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(dir.join("whereabouts.kubeconfig")).unwrap();
    assert_eq!(
        kubeconfig.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
        Some("https://10.96.0.1:443")
    );
    let context = kubeconfig.contexts[0].context.as_ref().unwrap();
    assert_eq!(context.namespace.as_deref(), Some("kube-system"));
    let user = kubeconfig.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(user.token_file.as_deref(), Some("/etc/cni/net.d/whereabouts.d/hereabouts.token"));
    assert_eq!(std::fs::read_to_string(dir.join("hereabouts.token")).unwrap(), "token-1");
    // Idempotent, and a rotated token is picked up.
    std::fs::write(sa.join("token"), "token-2").unwrap();
    run();
    assert_eq!(std::fs::read_to_string(dir.join("hereabouts.token")).unwrap(), "token-2");
    assert!(!Path::new(&dir.join(".whereabouts.conf.hereabouts-tmp")).exists());
    let _ = std::fs::remove_dir_all(&root);
}
