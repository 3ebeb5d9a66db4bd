//! Serde helpers for the protojson conventions Tetragon's JSON export uses
//! (`protojson.MarshalOptions{UseProtoNames: true}`).
//!
//! - proto3 scalars without presence are left out when zero, empty or false
//!   (the `is_zero_*`/`is_false` predicates, plus `String::is_empty`,
//!   `Vec::is_empty` and `BTreeMap::is_empty` at the use sites);
//! - 64-bit integers are JSON strings on output and are accepted as strings
//!   or numbers on input ([`u64_string`], [`i64_string`]);
//! - `bytes` are standard base64 with padding on output and standard or
//!   URL-safe, padded or not, on input ([`bytes_base64`]).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// `skip_serializing_if` for proto3 `uint32` fields.
pub(super) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// `skip_serializing_if` for proto3 `uint64` fields.
pub(super) fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// `skip_serializing_if` for proto3 `bool` fields.
pub(super) fn is_false(v: &bool) -> bool {
    !*v
}

/// A protojson 64-bit integer: a JSON string holding a decimal number, or a
/// JSON number (protojson reads both).
struct Int64Visitor<T>(PhantomData<T>);

impl<T> Visitor<'_> for Int64Visitor<T>
where
    T: TryFrom<u64> + TryFrom<i64> + FromStr,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 64-bit integer as a JSON number or a decimal string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// `u64` as protojson writes it: `"4096"`.
pub(super) mod u64_string {
    use super::*;

    pub(in crate::events) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(in crate::events) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Int64Visitor(PhantomData))
    }
}

/// `i64` as protojson writes it: `"-1"`.
pub(super) mod i64_string {
    use super::*;

    pub(in crate::events) fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(in crate::events) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(Int64Visitor(PhantomData))
    }
}

/// `bytes` as protojson writes them: standard base64 with padding.
pub(super) mod bytes_base64 {
    use super::*;

    pub(in crate::events) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::base64::encode(v))
    }

    pub(in crate::events) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 (standard or URL-safe, padded or not)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                super::super::base64::decode(v).map_err(E::custom)
            }
        }
        d.deserialize_str(BytesVisitor)
    }
}
