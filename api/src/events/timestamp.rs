//! `google.protobuf.Timestamp` in its protojson form.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::EventError;

/// 0001-01-01T00:00:00Z, the smallest time protojson accepts.
const MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the largest time protojson accepts.
const MAX_SECONDS: i64 = 253_402_300_799;
const NANOS_PER_SECOND: u32 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A point in time with nanosecond precision, serialized like protojson
/// serializes `google.protobuf.Timestamp`: RFC 3339 in UTC (`Z`), with 0, 3,
/// 6 or 9 fractional digits, the fewest that hold the value
/// (`2023-10-06T22:03:57.700327580Z`, `2021-10-18T20:08:55.567Z`,
/// `2023-10-06T21:52:41Z`).
///
/// Parsing also accepts numeric offsets (`+02:00`) and 1 to 9 fractional
/// digits, as protojson does. Years are limited to 1 through 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    seconds: i64,
    nanos: u32,
}

impl Timestamp {
    /// The time `seconds` (since the Unix epoch, UTC) plus `nanos`.
    pub fn new(seconds: i64, nanos: u32) -> Result<Self, EventError> {
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(EventError::TimestampRange { seconds });
        }
        if nanos >= NANOS_PER_SECOND {
            return Err(EventError::TimestampNanos { nanos });
        }
        Ok(Self { seconds, nanos })
    }

    /// Whole seconds since the Unix epoch.
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// Nanoseconds past [`Self::seconds`], below 10^9.
    pub fn nanos(&self) -> u32 {
        self.nanos
    }
}

impl TryFrom<SystemTime> for Timestamp {
    type Error = EventError;

    fn try_from(time: SystemTime) -> Result<Self, EventError> {
        let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => (
                i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                after.subsec_nanos(),
            ),
            Err(before) => {
                let before = before.duration();
                let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                match before.subsec_nanos() {
                    0 => (-secs, 0),
                    n => (-secs - 1, NANOS_PER_SECOND - n),
                }
            }
        };
        Self::new(seconds, nanos)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both are small and positive: day 1..=31, month 1..=12.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Writes `v` as `out.len()` decimal digits, zero-padded (higher digits of
/// a wider `v` are dropped).
fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Formatted into a buffer and written once: events carry several
// timestamps each, and `write!` with padded arguments was a tenth of the
// event reader's time.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = self.seconds.rem_euclid(SECONDS_PER_DAY) as u64;
        let (year, month, day) = civil_from_days(days);
        // "YYYY-MM-DDTHH:MM:SS" + ".nnnnnnnnn" + "Z"; the year is 1..=9999
        // (checked by `new`), so four digits hold it.
        let mut buf = *b"0000-00-00T00:00:00.000000000Z";
        put_digits(&mut buf[0..4], year.unsigned_abs());
        put_digits(&mut buf[5..7], u64::from(month));
        put_digits(&mut buf[8..10], u64::from(day));
        put_digits(&mut buf[11..13], second_of_day / 3600);
        put_digits(&mut buf[14..16], second_of_day / 60 % 60);
        put_digits(&mut buf[17..19], second_of_day % 60);
        let n = u64::from(self.nanos);
        let digits = if n == 0 {
            0
        } else if n.is_multiple_of(1_000_000) {
            put_digits(&mut buf[20..23], n / 1_000_000);
            3
        } else if n.is_multiple_of(1_000) {
            put_digits(&mut buf[20..26], n / 1_000);
            6
        } else {
            put_digits(&mut buf[20..29], n);
            9
        };
        let len = if digits == 0 { 19 } else { 20 + digits };
        buf[len] = b'Z';
        // Digits and ASCII separators only.
        let text = std::str::from_utf8(&buf[..=len]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

/// A cursor over the ASCII bytes of an RFC 3339 string.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize, what: &'static str) -> Result<u32, &'static str> {
        let end = self.at + count;
        let field = self.bytes.get(self.at..end).ok_or(what)?;
        let mut value = 0;
        for &b in field {
            if !b.is_ascii_digit() {
                return Err(what);
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.at = end;
        Ok(value)
    }

    fn literal(&mut self, byte: u8, what: &'static str) -> Result<(), &'static str> {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(what)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
}

fn parse(s: &str) -> Result<Timestamp, &'static str> {
    let mut c = Cursor {
        bytes: s.as_bytes(),
        at: 0,
    };
    let year = c.digits(4, "expected a four-digit year")?;
    c.literal(b'-', "expected '-' after the year")?;
    let month = c.digits(2, "expected a two-digit month")?;
    c.literal(b'-', "expected '-' after the month")?;
    let day = c.digits(2, "expected a two-digit day")?;
    c.literal(b'T', "expected 'T' between date and time")?;
    let hour = c.digits(2, "expected a two-digit hour")?;
    c.literal(b':', "expected ':' after the hour")?;
    let minute = c.digits(2, "expected two-digit minutes")?;
    c.literal(b':', "expected ':' after the minutes")?;
    let second = c.digits(2, "expected two-digit seconds")?;
    let mut nanos = 0;
    if c.peek() == Some(b'.') {
        c.at += 1;
        let start = c.at;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.at += 1;
        }
        let count = c.at - start;
        if count == 0 || count > 9 {
            return Err("expected 1 to 9 fractional digits");
        }
        c.at = start;
        nanos = c.digits(count, "expected fractional digits")? * 10u32.pow((9 - count) as u32);
    }
    let offset_seconds = match c.peek() {
        Some(b'Z') => {
            c.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.at += 1;
            let hours = c.digits(2, "expected a two-digit offset hour")?;
            c.literal(b':', "expected ':' in the offset")?;
            let minutes = c.digits(2, "expected two-digit offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return Err("expected 'Z' or a numeric offset"),
    };
    if c.at != c.bytes.len() {
        return Err("unexpected characters after the time zone");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    let year = i64::from(year);
    if day == 0 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }
    let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_seconds;
    Timestamp::new(seconds, nanos).map_err(|_| "outside years 0001 to 9999 in UTC")
}

impl FromStr for Timestamp {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, EventError> {
        parse(s).map_err(|reason| EventError::Timestamp {
            input: s.to_owned(),
            reason,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp::new(seconds, nanos).unwrap()
    }

    #[test]
    fn formats_with_the_fewest_of_0_3_6_9_digits() {
        // 2023-10-06T22:03:57Z is 1696629837 (date -u -d @1696629837).
        assert_eq!(ts(1_696_629_837, 0).to_string(), "2023-10-06T22:03:57Z");
        assert_eq!(
            ts(1_696_629_837, 500_000_000).to_string(),
            "2023-10-06T22:03:57.500Z"
        );
        assert_eq!(
            ts(1_696_629_837, 700_327_000).to_string(),
            "2023-10-06T22:03:57.700327Z"
        );
        assert_eq!(
            ts(1_696_629_837, 700_327_580).to_string(),
            "2023-10-06T22:03:57.700327580Z"
        );
        assert_eq!(
            ts(1_696_629_837, 1).to_string(),
            "2023-10-06T22:03:57.000000001Z"
        );
    }

    #[test]
    fn extremes_and_epoch() {
        assert_eq!(ts(0, 0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            ts(-1, 999_999_999).to_string(),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(ts(MIN_SECONDS, 0).to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(
            ts(MAX_SECONDS, 999_999_999).to_string(),
            "9999-12-31T23:59:59.999999999Z"
        );
        // 2000-02-29 (leap day of a year divisible by 400) is 951782400.
        assert_eq!(ts(951_782_400, 0).to_string(), "2000-02-29T00:00:00Z");
        assert!(Timestamp::new(MIN_SECONDS - 1, 0).is_err());
        assert!(Timestamp::new(MAX_SECONDS + 1, 0).is_err());
        assert!(Timestamp::new(0, NANOS_PER_SECOND).is_err());
    }

    #[test]
    fn parses_offsets_and_short_fractions() {
        let utc: Timestamp = "2023-10-06T22:03:57.7Z".parse().unwrap();
        assert_eq!(utc, ts(1_696_629_837, 700_000_000));
        let plus: Timestamp = "2023-10-07T00:33:57.7+02:30".parse().unwrap();
        assert_eq!(plus, utc);
        let minus: Timestamp = "2023-10-06T21:03:57.7-01:00".parse().unwrap();
        assert_eq!(minus, utc);
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2023-10-06",
            "2023-10-06 22:03:57Z",
            "2023-10-06T22:03:57",
            "2023-10-06T22:03:57.Z",
            "2023-10-06T22:03:57.1234567890Z",
            "2023-13-06T22:03:57Z",
            "2023-02-29T22:03:57Z",
            "2023-10-06T24:00:00Z",
            "2023-10-06T22:03:60Z",
            "2023-10-06T22:03:57Zjunk",
            "2023-10-06T22:03:57+2:00",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn from_system_time() {
        let t = UNIX_EPOCH + Duration::new(1_696_629_837, 700_327_580);
        assert_eq!(
            Timestamp::try_from(t).unwrap(),
            ts(1_696_629_837, 700_327_580)
        );
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(Timestamp::try_from(before).unwrap(), ts(-2, 750_000_000));
    }

    /// The formatting of `Display` before it wrote into a buffer.
    fn reference(t: &Timestamp) -> String {
        let days = t.seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = t.seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let mut s = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        );
        let n = t.nanos;
        if n != 0 && n.is_multiple_of(1_000_000) {
            s += &format!(".{:03}", n / 1_000_000);
        } else if n != 0 && n.is_multiple_of(1_000) {
            s += &format!(".{:06}", n / 1_000);
        } else if n != 0 {
            s += &format!(".{n:09}");
        }
        s + "Z"
    }

    proptest! {
        #[test]
        fn formats_as_before(
            seconds in MIN_SECONDS..=MAX_SECONDS,
            nanos in prop_oneof![
                Just(0u32),
                (0..1000u32).prop_map(|m| m * 1_000_000),
                (0..1_000_000u32).prop_map(|u| u * 1_000),
                0..NANOS_PER_SECOND,
            ],
        ) {
            let t = ts(seconds, nanos);
            prop_assert_eq!(t.to_string(), reference(&t));
        }

        #[test]
        fn round_trip(seconds in MIN_SECONDS..=MAX_SECONDS, nanos in 0..NANOS_PER_SECOND) {
            let t = ts(seconds, nanos);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn civil_round_trip(days in -719_162i64..=2_932_896) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
