//! PEM (RFC 7468) decoding, strict enough for trust material. Encoding is
//! [`crate::pem`].
//!
//! Text outside blocks is ignored (OpenSSL writes `Bag Attributes` and
//! comments there). Inside a block only base64 is accepted: RFC 1421
//! headers (`Proc-Type:`, used by legacy encrypted keys) are rejected as
//! invalid base64. The END label must repeat the BEGIN label.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Why a PEM input cannot be decoded. Lines are counted from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// A BEGIN or END line that is not `-----BEGIN <label>-----` or
    /// `-----END <label>-----` with a printable ASCII label.
    #[error("line {line}: malformed PEM boundary line (expected \"-----BEGIN <LABEL>-----\" or \"-----END <LABEL>-----\")")]
    Boundary {
        /// The line.
        line: usize,
    },
    /// An END line outside any block.
    #[error("line {line}: \"-----END {label}-----\" without a matching BEGIN line")]
    StrayEnd {
        /// The END line's label.
        label: String,
        /// The line.
        line: usize,
    },
    /// A BEGIN line inside a block, or a block that runs to the end of the input.
    #[error("line {line}: the PEM block \"{label}\" has no END line")]
    Unterminated {
        /// The block's label.
        label: String,
        /// The block's BEGIN line.
        line: usize,
    },
    /// The END label differs from the BEGIN label.
    #[error("line {line}: \"-----END {end}-----\" closes a block that began as \"{begin}\"")]
    MismatchedEnd {
        /// The BEGIN label.
        begin: String,
        /// The END label.
        end: String,
        /// The END line.
        line: usize,
    },
    /// The block's body is not standard padded base64.
    #[error("line {line}: the body of the PEM block \"{label}\" is not valid base64")]
    Base64 {
        /// The block's label.
        label: String,
        /// The block's BEGIN line.
        line: usize,
        /// What the decoder found.
        #[source]
        source: base64::DecodeError,
    },
}

/// One decoded PEM block. The bytes are zeroized on drop: a block may hold
/// a private key.
pub(crate) struct PemBlock {
    /// The label, as in `CERTIFICATE` or `PRIVATE KEY`.
    pub(crate) label: String,
    /// The decoded body.
    pub(crate) der: Zeroizing<Vec<u8>>,
}

/// Decodes every PEM block of `input`, in order. An input without any
/// block gives an empty list; the caller decides whether that is an error.
pub(crate) fn decode(input: &[u8]) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    // (label, BEGIN line, base64 text so far) of the block being read.
    let mut open: Option<(String, usize, Zeroizing<Vec<u8>>)> = None;
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = raw.trim_ascii();
        if line.starts_with(BEGIN) {
            let label = boundary_label(line, BEGIN, line_no)?;
            if let Some((label, line, _)) = open {
                return Err(PemError::Unterminated { label, line });
            }
            open = Some((label, line_no, Zeroizing::new(Vec::new())));
        } else if line.starts_with(END) {
            let end = boundary_label(line, END, line_no)?;
            let Some((begin, begin_line, body)) = open.take() else {
                return Err(PemError::StrayEnd {
                    label: end,
                    line: line_no,
                });
            };
            if end != begin {
                return Err(PemError::MismatchedEnd {
                    begin,
                    end,
                    line: line_no,
                });
            }
            let der = STANDARD
                .decode(body.as_slice())
                .map_err(|source| PemError::Base64 {
                    label: begin.clone(),
                    line: begin_line,
                    source,
                })?;
            blocks.push(PemBlock {
                label: begin,
                der: Zeroizing::new(der),
            });
        } else if let Some((_, _, body)) = open.as_mut() {
            body.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        }
    }
    match open {
        Some((label, line, _)) => Err(PemError::Unterminated { label, line }),
        None => Ok(blocks),
    }
}

/// The label of a trimmed boundary line that starts with `prefix`.
fn boundary_label(line: &[u8], prefix: &[u8], line_no: usize) -> Result<String, PemError> {
    let bad = || PemError::Boundary { line: line_no };
    let label = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(DASHES))
        .ok_or_else(bad)?;
    if !label.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(bad());
    }
    String::from_utf8(label.to_vec()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::encode;

    #[test]
    fn round_trips_and_skips_text_between_blocks() {
        let der: Vec<u8> = (0..=200).collect();
        let text = format!(
            "Bag Attributes: x\n{}\r\nsome comment\n{}",
            encode("CERTIFICATE", &der),
            encode("PRIVATE KEY", b"k")
        );
        let blocks = decode(text.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].der.as_slice(), der.as_slice());
        assert_eq!(blocks[1].label, "PRIVATE KEY");
        assert_eq!(blocks[1].der.as_slice(), b"k");
        assert!(encode("CERTIFICATE", &der)
            .lines()
            .all(|l| l.len() <= 64 || l.starts_with("-----")));
    }

    #[test]
    fn no_block_is_an_empty_list() {
        assert!(decode(b"not-pem\n").unwrap().is_empty());
        assert!(decode(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_blocks_are_rejected_with_the_line() {
        assert_eq!(
            decode(b"x\n-----BEGIN CERTIFICATE-----\nAAAA\n").err(),
            Some(PemError::Unterminated {
                label: "CERTIFICATE".into(),
                line: 2
            })
        );
        assert_eq!(
            decode(b"-----BEGIN A-----\nAAAA\n-----END B-----\n").err(),
            Some(PemError::MismatchedEnd {
                begin: "A".into(),
                end: "B".into(),
                line: 3
            })
        );
        assert_eq!(
            decode(b"-----END A-----\n").err(),
            Some(PemError::StrayEnd {
                label: "A".into(),
                line: 1
            })
        );
        assert_eq!(
            decode(b"-----BEGIN A\n").err(),
            Some(PemError::Boundary { line: 1 })
        );
        assert!(matches!(
            decode(b"-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\n-----END A-----\n"),
            Err(PemError::Base64 { line: 1, .. })
        ));
    }
}
