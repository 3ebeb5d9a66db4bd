//! The certificate authority of a trust domain: generations of signing keys
//! with overlapping rotation, X.509-SVID issuance, and the CA's files.

mod authority;
mod key;
mod rotation;
mod store;

pub use authority::{hex, Authority, AuthorityError, BACKDATE};
pub use key::{EcKey, KeyError, KeyUse};
pub use rotation::{
    jwt_key_id, CaSet, Generation, Lifecycle, RotationError, RotationEvent, RotationPolicy, Stage,
};
pub use store::{read_key_file, read_pem_file, read_supplied, write_file, CaStore, StoreError};
