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
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
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
    out
}

/// Encodes a private key; the text is zeroized when dropped.
pub fn encode_secret(label: &str, der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(encode(label, der))
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
}
