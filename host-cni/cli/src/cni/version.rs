//! CNI spec versions: which we accept, and what each one changes for an IPAM plugin.
//!
//! Runtimes still send every version from 0.1.0 on (old Multus configs are common), and a
//! result must come back in the request's own version: 0.1.0/0.2.0 have `ip4`/`ip6` objects,
//! 0.3.x/0.4.0 a list of `ips` each carrying `"version"`, 1.x the same list without it.

use hereabouts_host::error::{CniError, Code};

/// Every version we accept, oldest first; VERSION prints this list.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: what VERSION and version-less errors report.
pub const LATEST: &str = "1.1.0";

/// A supported version, kept as the exact string the request used (it is echoed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CniVersion(&'static str);

/// The result layouts, by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// 0.1.0, 0.2.0: `ip4` / `ip6` objects.
    Legacy,
    /// 0.3.0 … 0.4.0: `ips` with a per-address `"version"`.
    Versioned,
    /// 1.x: `ips` without `"version"`.
    Current,
}

impl CniVersion {
    /// Accepts a supported version; anything else is CNI error 1 listing what we support.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        SUPPORTED.iter().find(|v| **v == text).map(|v| CniVersion(v)).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion: {text:?} is not supported; supported versions: {}",
                    SUPPORTED.join(", ")
                ),
            )
        })
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    pub fn result_format(self) -> ResultFormat {
        match self.0 {
            "0.1.0" | "0.2.0" => ResultFormat::Legacy,
            v if v.starts_with("0.") => ResultFormat::Versioned,
            _ => ResultFormat::Current,
        }
    }

    /// CHECK exists from 0.4.0 on, GC and STATUS from 1.1.0 on.
    pub fn at_least(self, version: &str) -> bool {
        let index = |v: &str| SUPPORTED.iter().position(|s| *s == v);
        index(self.0) >= index(version)
    }

    /// CNI error 1 for a verb the request's version does not have.
    pub fn require(self, verb: &str, since: &str) -> Result<(), CniError> {
        if self.at_least(since) {
            return Ok(());
        }
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "cniVersion: {verb} needs cniVersion {since} or later, the config has {}",
                self.0
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_verbs_by_version() {
        let v = |s| CniVersion::parse(s).unwrap();
        assert_eq!(v("0.2.0").result_format(), ResultFormat::Legacy);
        assert_eq!(v("0.3.1").result_format(), ResultFormat::Versioned);
        assert_eq!(v("0.4.0").result_format(), ResultFormat::Versioned);
        assert_eq!(v("1.0.0").result_format(), ResultFormat::Current);
        assert!(v("0.4.0").require("CHECK", "0.4.0").is_ok());
        assert_eq!(
            v("0.3.1").require("CHECK", "0.4.0").unwrap_err().code,
            Code::IncompatibleVersion
        );
        assert_eq!(v("1.0.0").require("GC", "1.1.0").unwrap_err().code, Code::IncompatibleVersion);
        let error = CniVersion::parse("0.5.0").unwrap_err();
        assert_eq!(error.code, Code::IncompatibleVersion);
        assert!(error.msg.starts_with("cniVersion: \"0.5.0\""), "{}", error.msg);
    }
}
