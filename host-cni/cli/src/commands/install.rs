//! `hereabouts install`: what the DaemonSet's container does on every node (the image is
//! FROM scratch, so there is no shell to script it):
//! 1. copies this executable into the CNI bin directory as `hereabouts` and `whereabouts`
//!    (write to a temporary file, then rename: a runtime calling the plugin meanwhile runs
//!    either the old or the new binary, never half of one);
//! 2. writes `<conf-dir>/whereabouts.d/`: the service account's token and CA, a kubeconfig
//!    pointing at them (context namespace = where the custom resources live), and the flat
//!    file `whereabouts.conf` = `{"datastore": "kubernetes", "configuration_path": <that
//!    directory>, "kubernetes": {"kubeconfig": …}}`, and `nodename` from `$NODENAME` (the node
//!    slices' node name, as Whereabouts' installer writes it);
//! 3. with `--watch SECONDS`, re-reads the token and the CA every SECONDS until killed, and
//!    when either changed (projected tokens rotate; so does a cluster's CA) writes the new
//!    copy and the kubeconfig again, as Whereabouts' token watcher does.
//!
//! Paths written *into* files are host paths (`--host-conf-dir`), since the plugin runs on the
//! host, not in this container.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The CNI bin directory as mounted in this container.
    #[arg(long, default_value = "/host/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The CNI config directory as mounted in this container.
    #[arg(long, default_value = "/host/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// The same CNI config directory as the host sees it (written into the files).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub host_conf_dir: PathBuf,
    /// The service account's credentials.
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// API server URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// Namespace of the custom resources (default: $WHEREABOUTS_NAMESPACE, else the service
    /// account's namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Keep running and refresh the token every SECONDS.
    #[arg(long)]
    pub watch: Option<u64>,
}

pub fn exec(args: &InstallArgs) -> i32 {
    let kubeconfig = match install(args) {
        Ok(kubeconfig) => kubeconfig,
        Err(e) => {
            eprintln!("hereabouts install: {e}");
            return 1;
        }
    };
    let Some(seconds) = args.watch else { return 0 };
    loop {
        std::thread::sleep(Duration::from_secs(seconds.max(1)));
        match refresh_credentials(args, &kubeconfig) {
            Ok(changed) if !changed.is_empty() => eprintln!(
                "hereabouts install: {} changed: copied, kubeconfig rewritten",
                changed.join(" and ")
            ),
            Ok(_) => {}
            Err(e) => eprintln!("hereabouts install: refreshing the token and CA: {e}"),
        }
    }
}

const SUBDIR: &str = "whereabouts.d";

/// What could not be installed.
#[derive(Debug, thiserror::Error)]
enum InstallError {
    #[error("cannot find this executable: {0}")]
    OwnBinary(std::io::Error),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("KUBERNETES_SERVICE_HOST is not set; pass --server")]
    NoServer,
}

/// Installs; returns the kubeconfig's text, which the watch rewrites.
fn install(args: &InstallArgs) -> Result<String, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::OwnBinary)?;
    let binary = read(&exe)?;
    for name in ["hereabouts", "whereabouts"] {
        write_atomically(&args.bin_dir.join(name), &binary, 0o755)?;
    }
    let dir = args.conf_dir.join(SUBDIR);
    let host_dir = args.host_conf_dir.join(SUBDIR);
    std::fs::create_dir_all(&dir)
        .map_err(|source| InstallError::CreateDir { path: dir.clone(), source })?;
    let server = match &args.server {
        Some(server) => server.clone(),
        None => {
            let host =
                std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| InstallError::NoServer)?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            // An IPv6 service address needs brackets in a URL.
            if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            }
        }
    };
    let namespace = match &args.namespace {
        Some(ns) => ns.clone(),
        None => match std::env::var("WHEREABOUTS_NAMESPACE") {
            Ok(ns) if !ns.is_empty() => ns,
            _ => String::from_utf8_lossy(&read(&args.service_account_dir.join("namespace"))?)
                .trim()
                .to_string(),
        },
    };
    let kubeconfig = format!(
        "# Written by `hereabouts install`; the token file is refreshed while the DaemonSet runs.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: hereabouts\n  user:\n    tokenFile: {token}\n\
         contexts:\n- name: hereabouts\n  context:\n    cluster: local\n    user: hereabouts\n    namespace: {namespace}\n\
         current-context: hereabouts\n",
        ca = host_dir.join("hereabouts-ca.crt").display(),
        token = host_dir.join("hereabouts.token").display(),
    );
    refresh_credentials(args, &kubeconfig)?;
    // Written even when the credentials were already there (an upgrade may change it).
    write_atomically(&dir.join(KUBECONFIG), kubeconfig.as_bytes(), 0o600)?;
    // As Whereabouts' installer: `configuration_path` is the directory holding `nodename`,
    // the node's name for node slices (the plugin runs on the host, without the pod's env).
    let flat = serde_json::json!({
        "datastore": "kubernetes",
        "configuration_path": host_dir,
        "kubernetes": {"kubeconfig": host_dir.join(KUBECONFIG)},
    });
    match std::env::var("NODENAME") {
        Ok(node) if !node.trim().is_empty() => {
            write_atomically(&dir.join("nodename"), node.trim().as_bytes(), 0o644)?
        }
        _ => eprintln!(
            "hereabouts install: NODENAME is not set; node slices will use /etc/hostname as the node's name"
        ),
    }
    write_atomically(
        &dir.join("whereabouts.conf"),
        serde_json::to_string_pretty(&flat).unwrap().as_bytes(),
        0o644,
    )?;
    eprintln!(
        "hereabouts install: hereabouts and whereabouts in {}; flat file and kubeconfig in {} (namespace {namespace})",
        args.bin_dir.display(),
        dir.display()
    );
    Ok(kubeconfig)
}

const KUBECONFIG: &str = "whereabouts.kubeconfig";

/// Re-reads the service account's token and CA; when either differs from its copy next to the
/// kubeconfig (or the kubeconfig is missing), writes the new copies, then the kubeconfig.
/// Returns what changed ("token", "CA").
fn refresh_credentials(
    args: &InstallArgs,
    kubeconfig: &str,
) -> Result<Vec<&'static str>, InstallError> {
    let dir = args.conf_dir.join(SUBDIR);
    let mut changed = Vec::new();
    for (what, source, copy, mode) in [
        ("token", "token", "hereabouts.token", 0o600),
        ("CA", "ca.crt", "hereabouts-ca.crt", 0o644),
    ] {
        let bytes = read(&args.service_account_dir.join(source))?;
        let path = dir.join(copy);
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            write_atomically(&path, &bytes, mode)?;
            changed.push(what);
        }
    }
    let path = dir.join(KUBECONFIG);
    if !changed.is_empty() || !path.exists() {
        write_atomically(&path, kubeconfig.as_bytes(), 0o600)?;
    }
    Ok(changed)
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    std::fs::read(path).map_err(|source| InstallError::Read { path: path.to_path_buf(), source })
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.hereabouts-tmp", path.file_name().unwrap().to_string_lossy()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        InstallError::Write { path: path.to_path_buf(), source }
    })
}
