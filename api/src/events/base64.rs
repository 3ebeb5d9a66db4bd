//! Base64 (RFC 4648) for `bytes` fields and exec ids, written here so the
//! crate needs no extra dependency.
//!
//! Output is the standard alphabet with `=` padding, as Go's
//! `base64.StdEncoding` (used by protojson and by Tetragon's exec ids).
//! Input may use the standard or the URL-safe alphabet, with or without
//! padding, as protojson accepts; unused trailing bits are ignored, as Go's
//! non-strict decoder does.

use super::EventError;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(super) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        // chunk.len() is 1..=3, so 2..=4 sextets carry data.
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

fn error(offset: usize, reason: &'static str) -> EventError {
    EventError::Base64 { offset, reason }
}

/// Decodes standard or URL-safe base64, padded or not.
pub(super) fn decode(s: &str) -> Result<Vec<u8>, EventError> {
    let bytes = s.as_bytes();
    let data = match bytes.iter().position(|&c| c == b'=') {
        None => bytes,
        Some(pad_at) => {
            if !bytes.len().is_multiple_of(4) {
                return Err(error(
                    pad_at,
                    "padded input must be a multiple of 4 characters",
                ));
            }
            if bytes.len() - pad_at > 2 || bytes[pad_at..].iter().any(|&c| c != b'=') {
                return Err(error(pad_at, "padding only at the end, at most two '='"));
            }
            &bytes[..pad_at]
        }
    };
    if data.len() % 4 == 1 {
        return Err(error(
            data.len(),
            "truncated: one character cannot hold a byte",
        ));
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for (index, chunk) in data.chunks(4).enumerate() {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = sextet(c).ok_or_else(|| error(index * 4 + i, "not a base64 character"))?;
            n |= v << (18 - 6 * i);
        }
        // A chunk of k characters (2..=4) holds k - 1 bytes.
        let [_, b0, b1, b2] = n.to_be_bytes();
        out.extend_from_slice(&[b0, b1, b2][..chunk.len() - 1]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 4648 section 10 test vectors.
    const RFC4648: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors() {
        for (plain, encoded) in RFC4648 {
            assert_eq!(encode(plain.as_bytes()), *encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn url_safe_alphabet_is_accepted() {
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode("-_8=").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn malformed_input_is_rejected() {
        for bad in [
            "Z", "Zm9vY", "Zg=", "Zg===", "Z=g=", "Zm9v!A==", "Zg==Zg==", "====",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded = encode(&bytes);
            prop_assert_eq!(encoded.len() % 4, 0);
            prop_assert_eq!(decode(&encoded).unwrap(), bytes.clone());
            prop_assert_eq!(decode(encoded.trim_end_matches('=')).unwrap(), bytes);
        }
    }
}
