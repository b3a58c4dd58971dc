//! Opening the files a network config names, as an attacker would name them.
//!
//! The plugin runs as root on every node, and whoever may write a NetworkAttachmentDefinition
//! chooses `configuration_path`, `kubernetes.kubeconfig`, the etcd TLS files, `log_file` and
//! `data_dir`. So every such path is opened here, one way:
//! - absolute, without `..` (a relative path would depend on the runtime's working directory,
//!   and `..` would walk out of a directory we allow);
//! - with `O_NOFOLLOW` (a symbolic link as the last component is refused, not followed to the
//!   file an attacker chose) and `O_NONBLOCK` (opening a FIFO or a device never waits);
//! - then `fstat` on that one descriptor: only a regular file is read, and only up to a cap
//!   ([`MAX_CONFIG_FILE_BYTES`]): `/dev/zero` or a FIFO is an error naming the key, at once.
//!
//! Errors name the key and the path, never the file's content.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path};

/// The most a file named by a config (flat file, kubeconfig, TLS certificate or key) may hold.
/// Real ones are a few KiB; a kubeconfig with embedded certificates some tens.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Why a file named by a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{key}: {path:?} must be an absolute path without \"..\"")]
    NotAbsolute { key: String, path: String },
    #[error("{key}: {path}: {reason}")]
    Refused { key: String, path: String, reason: String },
    #[error("{key}: {path}: cannot read: {source}")]
    Io { key: String, path: String, source: std::io::Error },
}

impl FileError {
    /// The file does not exist (a flat-file candidate that is absent is skipped).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// `path` if it is absolute and has no `..` component.
pub fn absolute<'a>(key: &str, path: &'a str) -> Result<&'a Path, FileError> {
    let p = Path::new(path);
    if p.is_absolute() && !p.components().any(|c| c == Component::ParentDir) {
        Ok(p)
    } else {
        Err(FileError::NotAbsolute { key: key.into(), path: path.into() })
    }
}

/// The flags every open here adds: no symbolic link as the last component, never block on a
/// FIFO or device, not inherited by children.
fn guard_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

/// Refuses what is not a regular file (after the open, on the descriptor itself).
fn regular(key: &str, path: &Path, file: &File) -> Result<std::fs::Metadata, FileError> {
    let meta = file.metadata().map_err(|source| FileError::Io {
        key: key.into(),
        path: path.display().to_string(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(FileError::Refused {
            key: key.into(),
            path: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    Ok(meta)
}

fn open_error(key: &str, path: &Path, source: std::io::Error) -> FileError {
    // ELOOP is what O_NOFOLLOW answers for a symbolic link.
    if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return FileError::Refused {
            key: key.into(),
            path: path.display().to_string(),
            reason: "is a symbolic link (not followed)".into(),
        };
    }
    FileError::Io { key: key.into(), path: path.display().to_string(), source }
}

/// Reads the file a config key names: absolute, not through a final symbolic link, a
/// regular file of at most `cap` bytes.
pub fn read_capped(key: &str, path: &str, cap: u64) -> Result<Vec<u8>, FileError> {
    let path = absolute(key, path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(guard_flags())
        .open(path)
        .map_err(|e| open_error(key, path, e))?;
    let meta = regular(key, path, &file)?;
    let too_big = || FileError::Refused {
        key: key.into(),
        path: path.display().to_string(),
        reason: format!("larger than the {cap} bytes such a file may hold"),
    };
    if meta.size() > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.size() as usize);
    // The size may change while we read: never read more than the cap either way.
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|source| FileError::Io {
        key: key.into(),
        path: path.display().to_string(),
        source,
    })?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// As [`read_capped`] with [`MAX_CONFIG_FILE_BYTES`], as UTF-8 text.
pub fn read_config_text(key: &str, path: &str) -> Result<String, FileError> {
    let bytes = read_capped(key, path, MAX_CONFIG_FILE_BYTES)?;
    String::from_utf8(bytes).map_err(|_| FileError::Refused {
        key: key.into(),
        path: path.into(),
        reason: "not UTF-8 text".into(),
    })
}

/// Opens (creating it 0600 if missing) a file to append to: absolute, not through a final
/// symbolic link, a regular file.
pub fn open_append(key: &str, path: &str) -> Result<File, FileError> {
    let path = absolute(key, path)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(guard_flags())
        .open(path)
        .map_err(|e| open_error(key, path, e))?;
    regular(key, path, &file)?;
    Ok(file)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as it
/// is. Refuses a symbolic link as `dir` itself.
pub fn create_private_dir(key: &str, dir: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| FileError::Io { key: key.into(), path: dir.display().to_string(), source };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => Err(FileError::Refused {
            key: key.into(),
            path: dir.display().to_string(),
            reason: "is a symbolic link (not followed)".into(),
        }),
        Ok(_) => Err(FileError::Refused {
            key: key.into(),
            path: dir.display().to_string(),
            reason: "not a directory".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hereabouts-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn relative_and_dotdot_paths_are_refused() {
        for path in ["conf.json", "./x", "/etc/cni/../../etc/shadow", ""] {
            let error = read_capped("configuration_path", path, 10).unwrap_err();
            assert!(matches!(error, FileError::NotAbsolute { .. }), "{path}: {error}");
            assert!(error.to_string().starts_with("configuration_path: "), "{error}");
        }
    }

    #[test]
    fn symlinks_devices_and_big_files_are_refused_without_reading() {
        let dir = scratch("refuse");
        let target = dir.join("target");
        std::fs::write(&target, "secret").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = read_capped("k", link.to_str().unwrap(), 100).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let error = read_capped("k", "/dev/zero", 100).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        std::fs::write(&target, vec![b'x'; 101]).unwrap();
        let error = read_capped("k", target.to_str().unwrap(), 100).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
        assert!(!error.to_string().contains("xxx"), "{error}");
        let error = open_append("log_file", link.to_str().unwrap()).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn created_files_and_dirs_are_private() {
        let dir = scratch("private");
        let sub = dir.join("a/b");
        create_private_dir("data_dir", &sub).unwrap();
        let mode = std::fs::metadata(&sub).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let log = sub.join("x.log");
        open_append("log_file", log.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
