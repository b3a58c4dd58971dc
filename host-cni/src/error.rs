//! The CNI error boundary: every failure leaves the process as one of these.
//!
//! CNI spec error codes: 1 incompatible version, 2 unsupported field, 3 unknown container,
//! 4 invalid environment, 5 I/O failure, 6 undecodable content, 7 invalid network config,
//! 11 try again later, 50 plugin not available (STATUS). Codes from 100 are ours (see [`Code`]).

use serde::Serialize;

use crate::runtime::{
    CallError, IpamError, RuntimeError, StoreError, describe_ipam_error, describe_store_error,
};

/// CNI error codes we emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now (its store is not usable).
    PluginNotAvailable = 50,
    /// No free address left in a range.
    Exhausted = 100,
    /// A requested address is taken, excluded or outside every range.
    AddressUnavailable = 101,
    /// The allocator component trapped or failed to load: a bug, reported, never a panic.
    Internal = 102,
}

/// A CNI error result: `{"cniVersion", "code", "msg", "details"}` on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code: code as u32, msg: msg.into(), details: String::new() }
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
            code: u32,
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
            StoreError::Conflict | StoreError::Unavailable(_) => Code::TryAgainLater,
            StoreError::Corrupt(_) | StoreError::Failed(_) => Code::Io,
        };
        CniError::new(code, describe_store_error(error))
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
