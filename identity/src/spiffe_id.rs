//! SPIFFE IDs and trust domains, parsed per the SPIFFE-ID specification.
//!
//! A [`SpiffeId`] is `spiffe://<trust domain><path>`. The trust domain uses
//! only `[a-z0-9._-]`; the path is optional and, when present, is a sequence
//! of `/segment` where each segment is non-empty, is not `.` or `..`, and
//! uses only `[a-zA-Z0-9._-]`. There is no port, userinfo, query, fragment
//! or percent-encoding. Both types can only hold valid values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
/// The longest trust domain name the specification allows.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The longest SPIFFE ID, as a URI, the specification allows.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a string is not a SPIFFE ID or a trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input is empty.
    #[error("a SPIFFE ID cannot be empty")]
    Empty,
    /// The input does not start with `spiffe://`.
    #[error("the scheme must be exactly \"spiffe://\"")]
    Scheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `[a-z0-9._-]` in the trust domain.
    #[error("trust domain character {found:?} is not allowed (only a-z, 0-9, '.', '-' and '_')")]
    TrustDomainChar {
        /// The offending character.
        found: char,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("the trust domain is {len} bytes long; at most {MAX_TRUST_DOMAIN_LEN} are allowed")]
    TrustDomainTooLong {
        /// Its length.
        len: usize,
    },
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("the SPIFFE ID is {len} bytes long; at most {MAX_SPIFFE_ID_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// An empty path segment (`//` or a trailing `/`).
    #[error("the path cannot have empty segments or a trailing '/'")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path cannot contain the dot segment {segment:?}")]
    DotSegment {
        /// `.` or `..`.
        segment: &'static str,
    },
    /// A character outside `[a-zA-Z0-9._-]` in the path.
    #[error("path character {found:?} is not allowed (only a-z, A-Z, 0-9, '.', '-' and '_')")]
    PathChar {
        /// The offending character.
        found: char,
    },
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    PathStart,
}

/// A SPIFFE trust domain name, such as `example.org`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a SPIFFE ID, whose
    /// trust domain it takes (`spiffe://example.org/anything`).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.starts_with(SCHEME) {
            return SpiffeId::from_str(name).map(|id| id.trust_domain().clone());
        }
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name, as in `example.org`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: String::new(),
        }
    }

    /// A SPIFFE ID in this trust domain with the given path segments. A
    /// segment is one segment: one containing `/` is refused, so distinct
    /// segment lists never give the same ID.
    pub fn id_with_segments<I, S>(&self, segments: I) -> Result<SpiffeId, SpiffeIdError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut path = String::new();
        let mut slash = false;
        for segment in segments {
            let segment = segment.as_ref();
            slash |= segment.contains('/');
            path.push('/');
            path.push_str(segment);
        }
        // What else is wrong is reported first, as parsing would.
        let id = SpiffeId::new(self.clone(), &path)?;
        if slash {
            return Err(SpiffeIdError::PathChar { found: '/' });
        }
        Ok(id)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A SPIFFE ID: a trust domain and an optional path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg(/seg)*`.
    path: String,
}

impl SpiffeId {
    /// A SPIFFE ID from a trust domain and a path (empty or starting with `/`).
    pub fn new(trust_domain: TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        check_path(path)?;
        let len = SCHEME.len() + trust_domain.0.len() + path.len();
        if len > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len });
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: empty for a trust domain's own ID, else starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is a trust domain's own ID (no path).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path.is_empty()
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').skip(1)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let (domain, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        check_trust_domain(domain)?;
        Self::new(TrustDomain(domain.to_owned()), path)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain.0, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn check_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if let Some(found) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(SpiffeIdError::TrustDomainChar { found });
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: name.len() });
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let rest = path.strip_prefix('/').ok_or(SpiffeIdError::PathStart)?;
    for segment in rest.split('/') {
        match segment {
            "" => return Err(SpiffeIdError::EmptySegment),
            "." => return Err(SpiffeIdError::DotSegment { segment: "." }),
            ".." => return Err(SpiffeIdError::DotSegment { segment: ".." }),
            _ => {}
        }
        if let Some(found) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::PathChar { found });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parts() {
        let id: SpiffeId = "spiffe://example.org/ns/default/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain().name(), "example.org");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "default", "sa", "web"]
        );
        assert_eq!(id.to_string(), "spiffe://example.org/ns/default/sa/web");
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().to_string(), "spiffe://example.org");
        assert_eq!(
            td.id_with_segments(["identity", "1234"])
                .unwrap()
                .to_string(),
            "spiffe://example.org/identity/1234"
        );
        assert_eq!(
            TrustDomain::new("spiffe://example.org/x").unwrap(),
            td,
            "a SPIFFE ID names its trust domain"
        );
    }

    #[test]
    fn segments_are_checked_when_built() {
        let td = TrustDomain::new("td").unwrap();
        assert_eq!(
            td.id_with_segments(["ns", ""]),
            Err(SpiffeIdError::EmptySegment)
        );
        assert!(matches!(
            td.id_with_segments(["a/b~"]),
            Err(SpiffeIdError::PathChar { found: '~' })
        ));
    }

    #[test]
    fn a_segment_cannot_smuggle_in_more_segments() {
        let td = TrustDomain::new("td").unwrap();
        // Without the check both would be spiffe://td/ns/x/sa/y/sa/z.
        assert_eq!(
            td.id_with_segments(["ns", "x/sa/y", "sa", "z"]),
            Err(SpiffeIdError::PathChar { found: '/' })
        );
        assert_eq!(
            td.id_with_segments(["ns", "x", "sa", "y/sa/z"]),
            Err(SpiffeIdError::PathChar { found: '/' })
        );
        assert_eq!(
            td.id_with_segments(["a/b"]),
            Err(SpiffeIdError::PathChar { found: '/' })
        );
        assert!(td.id_with_segments(["/"]).is_err());
        assert_eq!(
            td.id_with_segments(["ns", "x", "sa", "y"])
                .unwrap()
                .to_string(),
            "spiffe://td/ns/x/sa/y"
        );
    }

    #[test]
    fn lengths_are_bounded() {
        let long = "a".repeat(256);
        assert_eq!(
            TrustDomain::new(&long),
            Err(SpiffeIdError::TrustDomainTooLong { len: 256 })
        );
        let path = format!("spiffe://td/{}", "p".repeat(2040));
        assert!(matches!(
            path.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let id: SpiffeId = "spiffe://td/x".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://td/x\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://TD\"").is_err());
    }
}
