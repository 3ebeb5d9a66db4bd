//! Security identities.
//!
//! A security identity is a number that stands for a set of labels: every
//! endpoint with the same labels (pod labels, namespace labels, service
//! account) shares it. The datapath only sees numbers; policy selects label
//! sets; this crate is the mapping between the two. It does no I/O.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod labels;
pub mod numeric;

pub use allocator::{AllocatedIdentity, AllocatorError, AllocatorSnapshot, IdentityAllocator};
pub use labels::{Labels, LabelsError};
pub use numeric::{NumericIdentity, ReservedIdentity};
