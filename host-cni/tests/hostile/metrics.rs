//! The controller's metrics port, reachable by anyone who reaches the pod: a connection that
//! never sends its request must not block `/metrics`, an endless header must not grow memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::kube_api::Emulator;
use super::{TempDir, bin, rss_kib, shared_cache};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` with a read timeout: the status line and the body.
fn scrape(port: u16, timeout: Duration) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn idle_and_endless_clients_do_not_starve_or_grow_the_metrics_server() {
    let emulator = Emulator::start();
    let dir = TempDir::new("metrics");
    let kubeconfig = emulator.kubeconfig(dir.path(), None);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin())
        .args(["controller", "--metrics-address=127.0.0.1", &format!("--metrics-port={port}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("HEREABOUTS_CACHE_DIR", shared_cache())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let controller = KillOnDrop(child);
    let started = Instant::now();
    while scrape(port, Duration::from_secs(5)).is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "the metrics port never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Connections that send nothing, held open.
    let idle: Vec<TcpStream> =
        (0..4).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let (status, body) =
        scrape(port, Duration::from_secs(10)).expect("/metrics answers beside idle connections");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    // An endless header: the server gives up on it (431, closed) long before 64 MiB.
    let before = rss_kib(&controller.0);
    let mut endless = TcpStream::connect(("127.0.0.1", port)).unwrap();
    endless.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    endless.write_all(b"GET /metrics HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match endless.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the server read a 64 MiB header");
    let after = rss_kib(&controller.0);
    assert!(after < before + (32 << 10), "RSS grew from {before} to {after} KiB");
    assert!(
        scrape(port, Duration::from_secs(10)).is_some_and(|(s, _)| s.starts_with("HTTP/1.1 200"))
    );
    drop(idle);
}
