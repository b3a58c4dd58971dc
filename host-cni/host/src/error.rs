//! The CNI error boundary: every failure leaves the process as one [`CniError`] — a code from
//! the spec (or ours, from 100), a message naming the field or the store, and details.
//!
//! Each conversion from a lower error is written once, here: a store error, an allocator
//! error, a runtime failure of the component, and a panic ([`guarded`]).

use serde::{Serialize, Serializer};

use crate::bindings::{
    self, IpamError, StoreError, describe_config_error, describe_ipam_error, describe_store_error,
};
use crate::config::ConfigError;
use crate::runtime::{CallError, ReadError, RuntimeError};

/// The CNI error codes we emit: the spec's (0–99) and ours (100 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    /// 1: the config's `cniVersion` is not one we support, or too old for the verb.
    IncompatibleVersion = 1,
    /// 2: a field we do not support.
    UnsupportedField = 2,
    /// 3: the container is unknown (CHECK of a container holding nothing).
    UnknownContainer = 3,
    /// 4: a required `CNI_*` environment variable is missing or malformed.
    InvalidEnvironment = 4,
    /// 5: an I/O failure: the store cannot be read or written, or holds data not ours.
    Io = 5,
    /// 6: stdin is not JSON.
    Decode = 6,
    /// 7: the network config is invalid.
    InvalidConfig = 7,
    /// 11: try again later (the store is unavailable or too contended).
    TryAgainLater = 11,
    /// 50, STATUS: the plugin cannot serve ADD now (its store is not usable).
    PluginNotAvailable = 50,
    /// No free address left in a range.
    Exhausted = 100,
    /// A requested address is taken, excluded or outside every range.
    AddressUnavailable = 101,
    /// The allocator component trapped or failed to load: a bug, reported, never a panic.
    Internal = 102,
}

impl Code {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        self as u32
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.number())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// A CNI error result: `{"cniVersion", "code", "msg", "details"}` on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON object CNI expects, for the given `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: Code,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("serialisable")
    }
}

impl From<&StoreError> for CniError {
    fn from(error: &StoreError) -> Self {
        let code = match error {
            StoreError::Unavailable(_) => Code::TryAgainLater,
            StoreError::Corrupt(_) | StoreError::Failed(_) => Code::Io,
        };
        CniError::new(code, describe_store_error(error))
    }
}

impl From<StoreError> for CniError {
    fn from(error: StoreError) -> Self {
        CniError::from(&error)
    }
}

impl From<ReadError> for CniError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Config(bindings::ConfigError::Malformed(message)) => {
                CniError::new(Code::Decode, message)
            }
            ReadError::Config(e @ bindings::ConfigError::Invalid(_)) => {
                CniError::new(Code::InvalidConfig, describe_config_error(&e))
            }
            ReadError::Runtime(runtime) => CniError::from(runtime),
        }
    }
}

impl From<&IpamError> for CniError {
    fn from(error: &IpamError) -> Self {
        let code = match error {
            IpamError::InvalidConfig(_) => Code::InvalidConfig,
            IpamError::Exhausted(_) => Code::Exhausted,
            IpamError::AddressUnavailable(_) => Code::AddressUnavailable,
            IpamError::Contention(_) => Code::TryAgainLater,
            IpamError::Store(store) => return CniError::from(store),
        };
        CniError::new(code, describe_ipam_error(error))
    }
}

impl From<RuntimeError> for CniError {
    fn from(error: RuntimeError) -> Self {
        CniError::new(Code::Internal, error.to_string())
    }
}

impl From<CallError> for CniError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Ipam(ipam) => CniError::from(&ipam.0),
            CallError::Runtime(runtime) => CniError::from(runtime),
        }
    }
}

impl From<ConfigError> for CniError {
    fn from(error: ConfigError) -> Self {
        CniError::new(Code::InvalidConfig, error.to_string())
    }
}

/// Runs `f`, turning a panic (a bug, in the host or surfacing from the component) into CNI
/// error 102, so a runtime never sees panic text where it expects JSON.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(CniError::new(
                Code::Internal,
                "internal error in hereabouts (a bug; please report it)",
            )
            .with_details(detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_numbers() {
        let error = CniError::new(Code::TryAgainLater, "busy").with_details("etcd");
        assert_eq!(
            error.to_json("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "etcd"})
        );
        assert_eq!(CniError::new(Code::Internal, "x").to_json("0.4.0")["code"], 102);
    }

    #[test]
    fn store_and_allocator_errors_map_to_their_codes() {
        let cases = [
            (CniError::from(StoreError::Unavailable("down".into())), Code::TryAgainLater),
            (CniError::from(StoreError::Corrupt("x".into())), Code::Io),
            (CniError::from(StoreError::Failed("x".into())), Code::Io),
            (CniError::from(&IpamError::Exhausted("full".into())), Code::Exhausted),
            (CniError::from(&IpamError::Contention("lost".into())), Code::TryAgainLater),
            (CniError::from(RuntimeError::Trap("unreachable".into())), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.code, code, "{error:?}");
        }
    }

    #[test]
    fn a_panic_becomes_error_102_with_its_text_in_details() {
        let error = guarded::<()>(|| panic!("boom")).unwrap_err();
        assert_eq!((error.code, error.details.as_str()), (Code::Internal, "boom"));
    }
}
