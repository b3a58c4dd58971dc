//! `hereabouts install` (the DaemonSet's job) into temporary directories standing in for the
//! host's CNI bin and config directories and the pod's service-account mount; and its watch
//! keeping the kubeconfig usable when the token and the cluster CA rotate, proven by an ADD
//! through TLS (a relay in front of the API-server emulation, serving a certificate of the
//! current CA).

mod kube_api;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_api::Emulator;
use serde_json::json;

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

/// A CA and a server certificate for 127.0.0.1 it signed (openssl, as an operator would).
struct Pki {
    ca_pem: Vec<u8>,
    server: rustls::ServerConfig,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pki(dir: &Path, name: &str) -> Pki {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let subject = format!("/CN={name}");
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", &subject],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-outform",
            "DER",
            "-out",
            "server.der",
        ],
    );
    openssl(
        &dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "server.key",
            "-outform",
            "DER",
            "-out",
            "server.key.der",
        ],
    );
    let cert =
        rustls::pki_types::CertificateDer::from(std::fs::read(dir.join("server.der")).unwrap());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        std::fs::read(dir.join("server.key.der")).unwrap().into(),
    );
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Pki { ca_pem: std::fs::read(dir.join("ca.crt")).unwrap(), server }
}

/// A TLS front for the emulator on 127.0.0.1: each connection gets the server certificate
/// current at accept time, and its bytes are relayed to the emulator's plain HTTP.
fn tls_relay(upstream: String, config: Arc<Mutex<Arc<rustls::ServerConfig>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let config = config.lock().unwrap().clone();
            let upstream = upstream.clone();
            std::thread::spawn(move || relay(client, &upstream, config));
        }
    });
    format!("https://{addr}")
}

fn relay(mut client: TcpStream, upstream: &str, config: Arc<rustls::ServerConfig>) {
    let Ok(mut tls) = rustls::ServerConnection::new(config) else { return };
    let Ok(mut server) = TcpStream::connect(upstream.trim_start_matches("http://")) else { return };
    let tick = Some(Duration::from_millis(5));
    let _ = client.set_read_timeout(tick);
    let _ = server.set_read_timeout(tick);
    let idle = |e: &std::io::Error| {
        matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tls.read_tls(&mut client) {
            Ok(0) => return,
            Ok(_) => {
                if tls.process_new_packets().is_err() {
                    let _ = tls.write_tls(&mut client); // the alert (e.g. unknown CA)
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if server.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(_) => break, // WouldBlock: no plaintext yet
            }
        }
        match server.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.writer().write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        while tls.wants_write() {
            if tls.write_tls(&mut client).is_err() {
                return;
            }
        }
    }
}

/// Issue 20: the cluster CA and the token rotate while the DaemonSet runs; its watch copies
/// both and rewrites the kubeconfig, and the next ADD (through TLS to the new certificate)
/// works. Before, the CA was copied once: every ADD after a CA rotation failed.
#[test]
fn install_watch_follows_a_rotated_token_and_ca_and_the_next_add_works() {
    let emulator = Emulator::start();
    let root = kube_api::temp_dir("kube-install", "rotate");
    let (bin, conf, sa) = (root.join("bin"), root.join("net.d"), root.join("sa"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&sa).unwrap();
    let (first, second) = (pki(&root, "ca-1"), pki(&root, "ca-2"));
    let current = Arc::new(Mutex::new(Arc::new(first.server.clone())));
    let server = tls_relay(emulator.url(), current.clone());
    std::fs::write(sa.join("token"), "token-1").unwrap();
    std::fs::write(sa.join("ca.crt"), &first.ca_pem).unwrap();
    std::fs::write(sa.join("namespace"), "kube-system\n").unwrap();

    // The DaemonSet's container, watching every second (no container here: the host paths
    // written into the files are the same directory).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = root.join("install.log");
    let _watch = Kill(
        Command::new(env!("CARGO_BIN_EXE_hereabouts"))
            .arg("install")
            .arg(format!("--bin-dir={}", bin.display()))
            .arg(format!("--conf-dir={}", conf.display()))
            .arg(format!("--host-conf-dir={}", conf.display()))
            .arg(format!("--service-account-dir={}", sa.display()))
            .arg(format!("--server={server}"))
            .arg("--watch=1")
            .env("NODENAME", "worker-1")
            .env_remove("WHEREABOUTS_NAMESPACE")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let dir = conf.join("whereabouts.d");
    let kubeconfig = dir.join("whereabouts.kubeconfig");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(done(), "{what} within 30 s");
    };
    wait_for("installed", &|| kubeconfig.exists() && dir.join("whereabouts.conf").exists());
    let cache = root.join("cache");
    let add = |container: &str| -> (bool, String) {
        let config = json!({"cniVersion": "1.0.0", "name": "rotate", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.60.0.0/24", "datastore": "kubernetes",
                     "kubernetes": {"kubeconfig": kubeconfig},
                     "configuration_path": root.join("no-flat-file.conf")}});
        let bin = env!("CARGO_BIN_EXE_hereabouts");
        let podref = format!("default/{container}");
        let (ok, stdout, _) =
            kube_api::cni_call(bin, None, "ADD", &config, container, &podref, &cache);
        (ok, stdout.to_string())
    };
    let (ok, out) = add("pod-before");
    assert!(ok, "ADD through TLS with the first CA: {out}");
    assert!(out.contains("10.60.0.1/24"), "{out}");

    // Rotation: the API server presents a certificate of a new CA; the kubelet projects the
    // new CA and a new token into the pod.
    *current.lock().unwrap() = Arc::new(second.server.clone());
    let (ok, out) = add("pod-stale");
    assert!(!ok, "the old CA must not verify the new certificate: {out}");
    std::fs::write(sa.join("ca.crt"), &second.ca_pem).unwrap();
    std::fs::write(sa.join("token"), "token-2").unwrap();
    let copied =
        |name: &str, want: &[u8]| std::fs::read(dir.join(name)).ok().as_deref() == Some(want);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(copied("hereabouts-ca.crt", &second.ca_pem) && copied("hereabouts.token", b"token-2"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = add("pod-after");
    assert!(
        ok,
        "the next ADD after the rotation: {out}\ninstall's log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(out.contains("10.60.0.2/24"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.join("hereabouts.token")).unwrap(), "token-2");
    let read = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let cluster = read.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some(server.as_str()));
    assert_eq!(
        cluster.certificate_authority.as_deref().map(PathBuf::from),
        Some(dir.join("hereabouts-ca.crt"))
    );
}
