//! X.509-SVIDs and X.509 bundles per the SPIFFE X509-SVID specification.
//!
//! - [`X509Svid::parse_pem`] / [`X509Svid::parse_der`] check an SVID's
//!   structure and that its key belongs to its leaf (no clock, no trust);
//! - [`X509Bundle`] holds one trust domain's anchors by key id, and
//!   [`X509Bundle::verify`] verifies a chain against them at a given time;
//! - [`X509BundleSet`] holds the bundles of several trust domains and
//!   verifies a chain against the bundle of its leaf's trust domain.

mod bundle;
mod bundle_set;
mod cert;
mod key;
pub(crate) mod pem_blocks;
mod svid;
mod verify;

pub use bundle::{KeyId, X509Bundle, X509BundleError};
pub use bundle_set::X509BundleSet;
pub use cert::{ChainError, MAX_CHAIN_LEN};
pub use key::PrivateKeyError;
pub use pem_blocks::PemError;
pub use svid::{PrivateKeyDer, X509Svid, X509SvidError};
pub use verify::{CertLocation, VerifiedSvid, VerifyError};
