//! CNI errors: the `{cniVersion, code, msg, details}` object printed on
//! stdout when a command fails.

use serde::Serialize;

/// A CNI error code: 1-99 are reserved by the specification, 100 and up
/// are this plugin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the requested CNI version is not supported.
    IncompatibleVersion,
    /// 2: a network-configuration field is not supported.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure (stdin could not be read, ...).
    Io,
    /// 6: the network configuration could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: try again later (a transient condition).
    TryAgainLater,
    /// 100: the palisade agent cannot be reached.
    AgentUnreachable,
    /// 101: the agent refused to allocate or release an address.
    Ipam,
    /// 102: the interfaces could not be created or configured.
    Interface,
    /// 103: the agent refused to register or forget the endpoint.
    Endpoint,
    /// 104: CHECK found the container's networking not as set up.
    CheckFailed,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidNetworkConfig => 7,
            Self::TryAgainLater => 11,
            Self::AgentUnreachable => 100,
            Self::Ipam => 101,
            Self::Interface => 102,
            Self::Endpoint => 103,
            Self::CheckFailed => 104,
        }
    }
}

/// A failed CNI command: what the runtime gets on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}{details}", if details.is_empty() { "" } else { ": " })]
pub struct CniError {
    /// The code.
    pub code: ErrorCode,
    /// A short message.
    pub msg: String,
    /// Details (the underlying error chain, what would fix it).
    pub details: String,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// An error with a message and details.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// An error whose details are the chain of `err` and its sources.
    pub fn from_error(
        code: ErrorCode,
        msg: impl Into<String>,
        err: &dyn std::error::Error,
    ) -> Self {
        Self::new(code, msg, error_chain(err))
    }

    /// The JSON object the runtime expects, for CNI version `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let wire = Wire {
            cni_version,
            code: self.code.code(),
            msg: &self.msg,
            details: &self.details,
        };
        // Serializing a struct of strings and a number cannot fail; keep a
        // fallback anyway rather than panic.
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"1.0.0\",\"code\":{},\"msg\":\"internal error\"}}",
                self.code.code()
            )
        })
    }
}

/// `err: source: source...` on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn standard_codes() {
        assert_eq!(ErrorCode::IncompatibleVersion.code(), 1);
        assert_eq!(ErrorCode::UnsupportedField.code(), 2);
        assert_eq!(ErrorCode::UnknownContainer.code(), 3);
        assert_eq!(ErrorCode::InvalidEnvironment.code(), 4);
        assert_eq!(ErrorCode::Io.code(), 5);
        assert_eq!(ErrorCode::Decode.code(), 6);
        assert_eq!(ErrorCode::InvalidNetworkConfig.code(), 7);
        assert_eq!(ErrorCode::TryAgainLater.code(), 11);
        assert!(ErrorCode::AgentUnreachable.code() >= 100);
    }

    #[test]
    fn json_shape() {
        let e = CniError::new(ErrorCode::Decode, "bad config", "line 1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "0.4.0", "code": 6, "msg": "bad config", "details": "line 1"})
        );
        let e = CniError::new(ErrorCode::Io, "x", "");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert!(v.get("details").is_none());
        assert_eq!(e.to_string(), "x");
    }

    #[test]
    fn chain_includes_sources() {
        let io = std::io::Error::other("inner");
        let outer = palisade_api::ClientError::Connect {
            path: "/x".into(),
            source: io,
        };
        let s = error_chain(&outer);
        assert!(s.contains("/x") && s.contains("inner"), "{s}");
    }
}
