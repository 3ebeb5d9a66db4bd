//! PEM encoding (RFC 7468) of certificates and keys.

use base64::Engine as _;
use zeroize::Zeroizing;

/// The label of a certificate block.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// The label of a PKCS#8 private key block.
pub const PRIVATE_KEY: &str = "PRIVATE KEY";

/// Encodes DER bytes as one PEM block with lines of 64 characters.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(block_len(label, body.len()));
    write_block(label, &body, &mut out);
    out
}

/// Encodes a private key; the text, and the base64 body it is built from,
/// are zeroized when dropped.
pub fn encode_secret(label: &str, der: &[u8]) -> Zeroizing<String> {
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    // Allocated once at its final size: a reallocation would leave a copy
    // of the key behind that nothing zeroizes.
    let mut out = Zeroizing::new(String::with_capacity(block_len(label, body.len())));
    write_block(label, &body, &mut out);
    out
}

/// The length of a PEM block with a base64 body of `body_len` characters.
fn block_len(label: &str, body_len: usize) -> usize {
    let lines = body_len.div_ceil(64);
    "-----BEGIN -----\n".len() + "-----END -----\n".len() + 2 * label.len() + body_len + lines
}

/// Appends the block to `out`, which has room for it.
fn write_block(label: &str, body: &str, out: &mut String) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// Encodes several certificates, one block each, in order.
pub fn encode_certificates<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> String {
    certs
        .into_iter()
        .map(|der| encode(CERTIFICATE, der))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_64_characters() {
        let pem = encode(CERTIFICATE, &[0xab; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
    }

    #[test]
    fn blocks_fill_exactly_what_was_allocated() {
        for len in [0, 1, 47, 48, 49, 96, 100, 121] {
            let der = vec![0x5a; len];
            let secret = encode_secret(PRIVATE_KEY, &der);
            assert_eq!(secret.len(), secret.capacity(), "{len} bytes");
            assert_eq!(*secret, encode(PRIVATE_KEY, &der));
        }
    }
}
