//! What palisade-auth/1 puts on the wire besides TLS, without I/O: the
//! server name (SNI) the client sends, which names the two identities of
//! the handshake, and the one line the server answers with.

use crate::NumericIdentity;

/// The domain every server name of palisade-auth/1 ends in.
const DOMAIN: &str = ".auth.palisade";
/// The longest response line, its newline included.
pub(super) const MAX_RESPONSE: usize = 512;
/// The longest reason a refusal carries, in bytes.
pub(super) const MAX_REASON: usize = 400;
const OK: &[u8] = b"ok";
const REFUSED: &[u8] = b"refused: ";

/// What the peer sent (or failed to send) breaks palisade-auth/1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The client sent no server name (SNI).
    #[error("the client sent no server name (SNI); palisade-auth/1 needs \"<server id>.<client id>.auth.palisade\"")]
    NoServerName,
    /// The server name is not under `auth.palisade`.
    #[error("server name {name:?} does not end in \"{DOMAIN}\"")]
    ServerNameDomain {
        /// The name the client sent.
        name: String,
    },
    /// The server name does not have exactly two labels before the domain.
    #[error("server name {name:?} is not \"<server id>.<client id>{DOMAIN}\" (two labels before the domain)")]
    ServerNameLabels {
        /// The name the client sent.
        name: String,
    },
    /// A label of the server name is not a security identity.
    #[error("label {label:?} of server name {name:?} is not a security identity (a decimal number from 1 to {max} without leading zeros)", max = u32::MAX)]
    ServerNameIdentity {
        /// The name the client sent.
        name: String,
        /// The offending label.
        label: String,
    },
    /// The peer did not agree on the application protocol `palisade-auth/1`.
    #[error("the peer does not speak palisade-auth/1 (ALPN)")]
    NoAlpn,
    /// No newline within the first 512 bytes of the response.
    #[error("the server's response has no newline within {MAX_RESPONSE} bytes")]
    ResponseTooLong,
    /// The connection ended cleanly before the response line did.
    #[error(
        "the server closed the connection before a whole response line ({received} bytes received)"
    )]
    ResponseTruncated {
        /// How many bytes of the line arrived.
        received: usize,
    },
    /// The response line is neither `ok` nor `refused: <reason>`.
    #[error("the server's response {line:?} is neither \"ok\" nor \"refused: <reason>\"")]
    BadResponse {
        /// The line (lossily decoded), without its newline.
        line: String,
    },
    /// A refusal's reason is not what a server sends: it is not UTF-8 or
    /// holds control characters (which could rewrite a log line or a
    /// terminal).
    #[error("the server's refusal carries a reason that is not text without control characters: {reason:?}")]
    BadReason {
        /// The reason (lossily decoded; shown escaped).
        reason: String,
    },
    /// A refusal's reason is longer than 400 bytes.
    #[error(
        "the server's refusal carries a reason of {len} bytes; at most {MAX_REASON} are allowed"
    )]
    ReasonTooLong {
        /// Its length.
        len: usize,
    },
}

/// The two identities a handshake authenticates, as the client names them
/// in its server name: `<server>.<client>.auth.palisade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The identity whose SVID the server presents.
    pub server: NumericIdentity,
    /// The identity whose SVID the client presents.
    pub client: NumericIdentity,
}

impl Pair {
    /// The server name (SNI) a client sends for this pair:
    /// `"<server>.<client>.auth.palisade"`, in decimal.
    pub fn server_name(&self) -> String {
        format!("{}.{}{DOMAIN}", self.server, self.client)
    }

    /// Parses a server name built by [`Pair::server_name`]. Anything else is
    /// refused: another domain, more or fewer labels, an identity that is
    /// not a decimal number from 1 to `u32::MAX` written without leading
    /// zeros or signs.
    pub fn parse_server_name(name: &str) -> Result<Self, WireError> {
        let labels = name
            .strip_suffix(DOMAIN)
            .ok_or_else(|| WireError::ServerNameDomain {
                name: name.to_owned(),
            })?;
        let mut split = labels.split('.');
        let (Some(server), Some(client), None) = (split.next(), split.next(), split.next()) else {
            return Err(WireError::ServerNameLabels {
                name: name.to_owned(),
            });
        };
        let identity = |label: &str| {
            parse_identity(label).ok_or_else(|| WireError::ServerNameIdentity {
                name: name.to_owned(),
                label: label.to_owned(),
            })
        };
        Ok(Self {
            server: identity(server)?,
            client: identity(client)?,
        })
    }
}

/// A decimal identity from 1 to `u32::MAX`, in its one canonical spelling.
fn parse_identity(label: &str) -> Option<NumericIdentity> {
    let canonical = label.bytes().all(|b| b.is_ascii_digit()) && !label.starts_with('0');
    // The digits check also keeps out what `u32::from_str` would accept
    // besides digits (a leading '+').
    let n = label.parse::<u32>().ok().filter(|_| canonical)?;
    Some(NumericIdentity(n))
}

/// Whether a refusal's reason may carry `c`: anything but control
/// characters (newlines, carriage returns, escape sequences).
fn fit_for_reason(c: char) -> bool {
    !c.is_control()
}

/// `reason` made fit for a refusal: control characters (newlines in
/// particular) become spaces, and it is cut to [`MAX_REASON`] bytes at a
/// character boundary.
pub(super) fn clean_reason(reason: &str) -> String {
    let mut clean = String::with_capacity(reason.len().min(MAX_REASON));
    for c in reason
        .chars()
        .map(|c| if fit_for_reason(c) { c } else { ' ' })
    {
        if clean.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        clean.push(c);
    }
    clean
}

/// The server's answer, after the handshake: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Response {
    /// `ok`: the pair is authenticated.
    Ok,
    /// `refused: <reason>`.
    Refused {
        /// Why (at most [`MAX_REASON`] bytes, no control characters).
        reason: String,
    },
}

impl Response {
    /// A refusal for `reason`, made fit for the line ([`clean_reason`]).
    pub(super) fn refused(reason: &str) -> Self {
        Self::Refused {
            reason: clean_reason(reason),
        }
    }

    /// The line, with its newline.
    pub(super) fn to_line(&self) -> Vec<u8> {
        let mut line = match self {
            Self::Ok => OK.to_vec(),
            Self::Refused { reason } => [REFUSED, reason.as_bytes()].concat(),
        };
        line.push(b'\n');
        line
    }

    /// Parses a line without its newline. It accepts exactly what a server
    /// sends: `ok`, or `refused: ` and a reason of at most [`MAX_REASON`]
    /// bytes of UTF-8 without control characters (what [`clean_reason`]
    /// makes), since the reason ends up in logs and on terminals.
    pub(super) fn parse(line: &[u8]) -> Result<Self, WireError> {
        if line == OK {
            return Ok(Self::Ok);
        }
        let Some(reason) = line.strip_prefix(REFUSED) else {
            return Err(WireError::BadResponse {
                line: String::from_utf8_lossy(line).into_owned(),
            });
        };
        if reason.len() > MAX_REASON {
            return Err(WireError::ReasonTooLong { len: reason.len() });
        }
        match std::str::from_utf8(reason) {
            Ok(text) if text.chars().all(fit_for_reason) => Ok(Self::Refused {
                reason: text.to_owned(),
            }),
            _ => Err(WireError::BadReason {
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
        }
    }

    /// Finds the response in what has arrived so far: `None` while more is
    /// needed. `closed` says the connection ended after `received`.
    pub(super) fn from_received(received: &[u8], closed: bool) -> Option<Result<Self, WireError>> {
        if let Some(end) = received.iter().position(|&b| b == b'\n') {
            return Some(Self::parse(&received[..end]));
        }
        if received.len() >= MAX_RESPONSE {
            return Some(Err(WireError::ResponseTooLong));
        }
        closed.then_some(Err(WireError::ResponseTruncated {
            received: received.len(),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_pair_round_trips(server in 1u32.., client in 1u32..) {
            let p = pair(server, client);
            prop_assert_eq!(Pair::parse_server_name(&p.server_name()), Ok(p));
        }

        /// Whatever is accepted is the one spelling of a pair.
        #[test]
        fn only_canonical_names_parse(
            name in prop_oneof![
                "\\PC{0,40}",
                "[0-9+-]{0,12}\\.[0-9+-]{0,12}(\\.[0-9]{1,3})?\\.auth\\.palisade",
            ]
        ) {
            if let Ok(p) = Pair::parse_server_name(&name) {
                prop_assert_eq!(p.server_name(), name);
            }
        }

        /// Parsing never panics, and what it accepts is exactly what a
        /// server could send: the line a response the server builds would
        /// be.
        #[test]
        fn lines_parse_or_are_refused(
            prefix in prop_oneof![Just(&b""[..]), Just(OK), Just(REFUSED)],
            rest in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..600),
                "\\PC{0,420}".prop_map(String::into_bytes),
                // Mostly text, with control characters among it.
                "[a-z \\x00-\\x1f\\x7f\\u{80}-\\u{9f}é]{0,40}".prop_map(String::into_bytes),
            ],
        ) {
            let line = [prefix, &rest].concat();
            if let Ok(r) = Response::parse(&line) {
                prop_assert_eq!(r.to_line(), [&line[..], b"\n"].concat());
                if let Response::Refused { reason } = &r {
                    prop_assert_eq!(&Response::refused(reason), &r);
                }
            }
        }

        /// Whatever a server sends parses back to itself.
        #[test]
        fn what_a_server_sends_parses(reason in "\\PC{0,420}|[a-z\\x00-\\x1f\\x7f]{0,40}") {
            let r = Response::refused(&reason);
            let line = r.to_line();
            prop_assert_eq!(Response::parse(&line[..line.len() - 1]), Ok(r));
        }
    }

    fn pair(server: u32, client: u32) -> Pair {
        Pair {
            server: NumericIdentity(server),
            client: NumericIdentity(client),
        }
    }

    #[test]
    fn server_names_round_trip() {
        for (s, c) in [
            (1, 1),
            (256, 65_536),
            (5, 7),
            (u32::MAX, 1),
            (0x0100_0000, 42),
        ] {
            let name = pair(s, c).server_name();
            assert_eq!(Pair::parse_server_name(&name), Ok(pair(s, c)), "{name}");
        }
        assert_eq!(pair(300, 4000).server_name(), "300.4000.auth.palisade");
    }

    #[test]
    fn the_server_id_comes_first() {
        let p = Pair::parse_server_name("5.7.auth.palisade").unwrap();
        assert_eq!(p.server, NumericIdentity(5));
        assert_eq!(p.client, NumericIdentity(7));
    }

    #[test]
    fn anything_else_is_refused() {
        let domain = |n: &str| WireError::ServerNameDomain { name: n.to_owned() };
        let labels = |n: &str| WireError::ServerNameLabels { name: n.to_owned() };
        let identity = |n: &str, l: &str| WireError::ServerNameIdentity {
            name: n.to_owned(),
            label: l.to_owned(),
        };
        let cases = [
            ("", domain("")),
            ("auth.palisade", domain("auth.palisade")),
            ("5.7.auth.palisade.", domain("5.7.auth.palisade.")),
            ("5.7.auth.example", domain("5.7.auth.example")),
            ("5.7.AUTH.palisade", domain("5.7.AUTH.palisade")),
            ("5.7xauth.palisade", domain("5.7xauth.palisade")),
            (".auth.palisade", labels(".auth.palisade")),
            ("5.auth.palisade", labels("5.auth.palisade")),
            ("1.5.7.auth.palisade", labels("1.5.7.auth.palisade")),
            ("5.7..auth.palisade", labels("5.7..auth.palisade")),
            ("5..auth.palisade", identity("5..auth.palisade", "")),
            (".7.auth.palisade", identity(".7.auth.palisade", "")),
            ("0.7.auth.palisade", identity("0.7.auth.palisade", "0")),
            ("5.0.auth.palisade", identity("5.0.auth.palisade", "0")),
            ("05.7.auth.palisade", identity("05.7.auth.palisade", "05")),
            (
                "5.007.auth.palisade",
                identity("5.007.auth.palisade", "007"),
            ),
            ("+5.7.auth.palisade", identity("+5.7.auth.palisade", "+5")),
            ("-5.7.auth.palisade", identity("-5.7.auth.palisade", "-5")),
            (
                "0x5.7.auth.palisade",
                identity("0x5.7.auth.palisade", "0x5"),
            ),
            ("5.7a.auth.palisade", identity("5.7a.auth.palisade", "7a")),
            (" 5.7.auth.palisade", identity(" 5.7.auth.palisade", " 5")),
            ("٥.7.auth.palisade", identity("٥.7.auth.palisade", "٥")),
            (
                "4294967296.7.auth.palisade",
                identity("4294967296.7.auth.palisade", "4294967296"),
            ),
            (
                "5.99999999999999999999.auth.palisade",
                identity(
                    "5.99999999999999999999.auth.palisade",
                    "99999999999999999999",
                ),
            ),
        ];
        for (name, error) in cases {
            assert_eq!(Pair::parse_server_name(name), Err(error), "{name:?}");
        }
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Ok,
            Response::refused("no"),
            Response::refused(""),
            Response::refused("ünïcödé"),
        ] {
            let line = r.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Response::parse(&line[..line.len() - 1]), Ok(r));
        }
        assert_eq!(Response::Ok.to_line(), b"ok\n");
        assert_eq!(Response::refused("busy").to_line(), b"refused: busy\n");
    }

    #[test]
    fn a_reason_is_one_short_line() {
        let Response::Refused { reason } = Response::refused("a\nb\r\nc\0d") else {
            panic!("not a refusal");
        };
        assert_eq!(reason, "a b  c d");

        // Cut at a character boundary: 'é' is two bytes.
        let Response::Refused { reason } = Response::refused(&"é".repeat(300)) else {
            panic!("not a refusal");
        };
        assert_eq!(reason.len(), MAX_REASON);
        let Response::Refused { reason } = Response::refused(&format!("x{}", "é".repeat(300)))
        else {
            panic!("not a refusal");
        };
        assert_eq!(reason.len(), MAX_REASON - 1);

        let longest = Response::refused(&"x".repeat(10_000)).to_line();
        assert_eq!(longest.len(), REFUSED.len() + MAX_REASON + 1);
        assert!(longest.len() <= MAX_RESPONSE);
    }

    #[test]
    fn bad_responses_are_refused() {
        for line in [&b"OK"[..], b"ok ", b"", b"refused", b"refused:x", b"yes"] {
            assert!(
                matches!(Response::parse(line), Err(WireError::BadResponse { .. })),
                "{line:?}"
            );
        }
        for reason in [
            &b"a\rb"[..],
            b"\x1b[2Jcleared",
            b"tab\there",
            b"nul\0",
            b"del\x7f",
            "c1\u{9b}31m".as_bytes(),
            b"not utf-8 \xff",
        ] {
            let line = [REFUSED, reason].concat();
            assert_eq!(
                Response::parse(&line),
                Err(WireError::BadReason {
                    reason: String::from_utf8_lossy(reason).into_owned()
                }),
                "{line:?}"
            );
            assert!(
                !WireError::BadReason {
                    reason: String::from_utf8_lossy(reason).into_owned()
                }
                .to_string()
                .chars()
                .any(char::is_control),
                "the message shows the reason escaped"
            );
        }
        let long = [REFUSED, &[b'x'; MAX_REASON + 1][..]].concat();
        assert_eq!(
            Response::parse(&long),
            Err(WireError::ReasonTooLong {
                len: MAX_REASON + 1
            })
        );
    }

    #[test]
    fn the_line_is_found_in_what_arrived() {
        assert_eq!(Response::from_received(b"o", false), None);
        assert_eq!(
            Response::from_received(b"ok\n", false),
            Some(Ok(Response::Ok))
        );
        assert_eq!(
            Response::from_received(b"ok\nmore", true),
            Some(Ok(Response::Ok))
        );
        assert_eq!(
            Response::from_received(b"o", true),
            Some(Err(WireError::ResponseTruncated { received: 1 }))
        );
        assert_eq!(
            Response::from_received(&[b'x'; MAX_RESPONSE], false),
            Some(Err(WireError::ResponseTooLong))
        );
        let mut almost = vec![b'x'; MAX_RESPONSE - 1];
        assert_eq!(Response::from_received(&almost, false), None);
        almost.push(b'\n');
        assert!(matches!(
            Response::from_received(&almost, false),
            Some(Err(WireError::BadResponse { .. }))
        ));
    }
}
