//! Files a network config names: symbolic links, FIFOs, devices, oversized and private files,
//! and what the plugin creates.

use serde_json::json;

use super::{Cni, TempDir, conf, mkfifo, mode, shared_cache};

/// A NAD's `log_file` that is a symbolic link to a victim, with a network name carrying a
/// passwd line: the victim is never written to.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn log_file_symlink_is_not_followed() {
    let dir = TempDir::new("log-link");
    let victim = dir.join("passwd");
    std::fs::write(&victim, "root:x:0:0::/root:/bin/bash\n").unwrap();
    let link = dir.join("hereabouts.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let mut config = conf(&dir, json!({"log_file": link, "log_level": "debug"}));
    config["name"] = json!("n\nhacker::0:0::/root:/bin/sh\n");
    // The link is in an allowed directory: only O_NOFOLLOW stands between it and the victim.
    let out = Cni::new("ADD").env("HEREABOUTS_LOG_DIR", dir.path()).run(&config);
    out.ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0::/root:/bin/bash\n");
    assert!(out.stderr.contains("symbolic link"), "{out:?}");
}

/// Every logged field is escaped: a network name cannot start a line of its own.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn logged_fields_cannot_start_a_line() {
    let dir = TempDir::new("log-escape");
    let log = dir.join("hereabouts.log");
    let mut config = conf(&dir, json!({"log_file": log, "log_level": "debug"}));
    config["name"] = json!("n\nhacker::0:0::/root:/bin/sh\n\u{1b}[2J");
    Cni::new("ADD").env("HEREABOUTS_LOG_DIR", dir.path()).run(&config).ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(r"n\nhacker::0:0::/root:/bin/sh\n\u{1b}[2J"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("hacker")), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert_eq!(mode(&log), 0o600);
}

/// A NAD may only log inside the allowed directories; the flat file (the node admin's) may
/// name any place.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn a_nad_cannot_choose_where_root_writes_its_log() {
    let dir = TempDir::new("log-dir");
    let log = dir.join("chosen.log");
    let out = Cni::new("ADD").run(&conf(&dir, json!({"log_file": log, "log_level": "debug"})));
    out.ok();
    assert!(!log.exists(), "a NAD's log_file outside the allowed directories was created");
    assert!(out.stderr.contains("may only log inside"), "{out:?}");

    let flat = dir.join("flat.conf");
    let flat_log = dir.join("flat.log");
    std::fs::write(&flat, json!({"log_file": flat_log, "log_level": "debug"}).to_string()).unwrap();
    let config = conf(&dir, json!({"configuration_path": flat}));
    Cni::new("ADD").container("c2").run(&config).ok();
    let text = std::fs::read_to_string(&flat_log).unwrap();
    assert!(text.contains("allocated"), "{text}");
    assert_eq!(mode(&flat_log), 0o600);
}

/// `kubernetes.kubeconfig` naming a private key: the error names the key and the path, and
/// carries not a line of the file.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn a_file_that_does_not_parse_is_never_quoted() {
    let dir = TempDir::new("leak");
    let key = dir.join("tls.key");
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nc2VjcmV0LWxpbmUtdHdv\n-----END PRIVATE KEY-----\n";
    std::fs::write(&key, pem).unwrap();
    for config in [
        conf(&dir, json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": key}})),
        conf(&dir, json!({"configuration_path": key})),
    ] {
        let out = Cni::new("ADD").run(&config);
        let msg = out.err(if config["ipam"]["configuration_path"].is_null() { 5 } else { 7 });
        assert!(msg.contains(key.to_str().unwrap()), "{msg}");
        for secret in ["PRIVATE KEY", "MIIEvQ", "c2VjcmV0"] {
            assert!(!out.stdout.contains(secret), "{secret} leaked: {}", out.stdout);
            assert!(!out.stderr.contains(secret), "{secret} leaked: {}", out.stderr);
        }
    }
}

/// `configuration_path` as a FIFO, `/dev/zero`, an oversized file or a symbolic link: a CNI
/// error naming the key, at once, without reading it.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn configuration_path_must_be_a_small_regular_file() {
    let dir = TempDir::new("flat");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let big = dir.join("big.conf");
    // Valid JSON (an object after 2 MiB of spaces): only a size cap refuses it.
    std::fs::write(&big, format!("{}{{}}", " ".repeat(2 << 20))).unwrap();
    let target = dir.join("real.conf");
    std::fs::write(&target, "{}").unwrap();
    let link = dir.join("link.conf");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cases = [
        (fifo.to_str().unwrap().to_string(), "not a regular file"),
        ("/dev/zero".to_string(), "not a regular file"),
        (big.to_str().unwrap().to_string(), "larger than"),
        (link.to_str().unwrap().to_string(), "symbolic link"),
        ("flat.conf".to_string(), "absolute path"),
    ];
    for (path, why) in cases {
        let out = Cni::new("ADD").run(&conf(&dir, json!({"configuration_path": path})));
        let msg = out.err(7);
        assert!(msg.contains("configuration_path") && msg.contains(why), "{path}: {msg}");
        assert!(out.peak_rss_kib < 200 << 10, "{path}: {} KiB", out.peak_rss_kib);
    }
}

/// The database is never opened through a symbolic link (a dangling one would make root
/// create its target) nor as a FIFO; a relative `data_dir` is refused; what the plugin
/// creates is private (directories 0700, files 0600).
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn the_store_is_opened_only_as_a_regular_file_and_created_private() {
    let dir = TempDir::new("store");
    let data = dir.join("store");
    std::fs::create_dir(&data).unwrap();
    let target = dir.join("created-by-root");
    std::os::unix::fs::symlink(&target, data.join("store.sqlite")).unwrap();
    let msg = Cni::new("ADD").run(&conf(&dir, json!({}))).err(5);
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(!target.exists(), "the dangling link's target was created");

    std::fs::remove_file(data.join("store.sqlite")).unwrap();
    mkfifo(&data.join("store.sqlite"));
    let msg = Cni::new("ADD").run(&conf(&dir, json!({}))).err(5);
    assert!(msg.contains("not a regular file"), "{msg}");

    let msg = Cni::new("ADD").dir(dir.path()).run(&conf(&dir, json!({"data_dir": "rel"}))).err(7);
    assert!(msg.starts_with("ipam.data_dir:") && msg.contains("absolute"), "{msg}");
    assert!(!dir.join("rel").exists());

    let fresh = dir.join("fresh/data");
    Cni::new("ADD").run(&conf(&dir, json!({"data_dir": fresh}))).ok();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&dir.join("fresh")), 0o700);
    for name in ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"] {
        let file = fresh.join(name);
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{name}");
        }
    }
    assert!(fresh.join("store.sqlite").exists());
}

/// Flat-file etcd credentials go only to the flat file's endpoint: a NAD naming its own
/// `etcd_host` is refused before anything connects, and the listener it names hears nothing.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn flat_file_credentials_never_reach_the_nads_endpoint() {
    let dir = TempDir::new("creds");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let into = heard.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let into = into.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let flat = dir.join("whereabouts.conf");
    std::fs::write(
        &flat,
        json!({"datastore": "etcd", "etcd_host": "127.0.0.1:1", "etcd_username": "root",
               "etcd_password": "s3cret-from-the-flat-file", "etcd_dial_timeout": 1,
               "etcd_request_timeout": 2})
        .to_string(),
    )
    .unwrap();
    let config =
        conf(&dir, json!({"configuration_path": flat, "etcd_host": format!("127.0.0.1:{port}")}));
    let msg = Cni::new("ADD").run(&config).err(7);
    assert!(msg.starts_with("ipam.etcd_host:") && msg.contains("etcd_password"), "{msg}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let heard = heard.lock().unwrap();
    assert!(heard.is_empty(), "the NAD's listener heard: {:?}", String::from_utf8_lossy(&heard));

    // The flat file's own endpoint, repeated in the NAD, is fine (and unreachable here: 11).
    let same = conf(&dir, json!({"configuration_path": flat, "etcd_host": "127.0.0.1:1"}));
    Cni::new("ADD").run(&same).err(11);
}

/// The compiled-component cache: nothing is created in a cache directory that is not
/// private (`compile.lock` through a link included), and a failed write leaves no temporary
/// file behind.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn the_cache_creates_nothing_it_should_not() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cache");
    let shared = dir.join("cache");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = dir.join("created-through-the-lock");
    std::os::unix::fs::symlink(&target, shared.join("compile.lock")).unwrap();
    Cni::new("ADD").env("HEREABOUTS_CACHE_DIR", &shared).run(&conf(&dir, json!({}))).ok();
    assert!(!target.exists(), "compile.lock was followed in a cache that is not private");
    let names: Vec<_> =
        std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["compile.lock"], "nothing is cached in a shared directory");

    // The artifact's name (from the shared cache, filled now if no test did yet), then a
    // directory in its place: the rename fails.
    Cni::new("ADD").container("c0").run(&conf(&dir, json!({}))).ok();
    let artifact = std::fs::read_dir(shared_cache())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".cwasm"))
        .expect("the shared cache holds the artifact");
    let private = dir.join("private");
    std::fs::create_dir_all(private.join(&artifact)).unwrap();
    let out = Cni::new("ADD")
        .container("c2")
        .env("HEREABOUTS_CACHE_DIR", &private)
        .run(&conf(&dir, json!({})));
    out.ok();
    let left: Vec<_> = std::fs::read_dir(&private)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// `hereabouts check` shows values, but never those of keys that look like secrets.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn check_redacts_values_of_secret_keys() {
    let dir = TempDir::new("check");
    let file = dir.join("net.conf");
    let config = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
        "ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "etcd_passwd": "hunter2-typo",
                 "etcd_token": "tok-abcdef", "etcd_keyfile": "/secret/path.key"}});
    std::fs::write(&file, config.to_string()).unwrap();
    for format in ["text", "json", "sarif"] {
        let out = std::process::Command::new(super::bin())
            .args(["check", "--format", format])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("etcd_passwd"), "{format}: the finding is reported: {text}");
        for secret in ["hunter2-typo", "tok-abcdef", "/secret/path.key"] {
            assert!(!text.contains(secret), "{format}: {secret} shown: {text}");
        }
    }
}
