//! Instants as the crate writes them: Unix seconds (JWT claims, the node
//! registry, certificate validity checks) and RFC 3339 (error messages).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// Whole seconds since the Unix epoch; 0 for an instant before it.
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The instant `secs` seconds from the Unix epoch (before it when
/// negative), as certificates and JWTs write instants; `None` when this
/// platform's `SystemTime` cannot hold it.
pub(crate) fn from_unix_seconds(secs: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// `t` in UTC as RFC 3339 to the second, such as `2027-01-15T08:00:00Z`
/// (Unix seconds for an instant outside the years 1 to 9999).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} (Unix seconds)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_counts() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(rfc3339(t), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(unix_seconds(t), 1_800_000_000);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(from_unix_seconds(1_800_000_000), Some(t));
        assert_eq!(
            from_unix_seconds(-5),
            Some(UNIX_EPOCH - Duration::from_secs(5))
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(far), format!("{} (Unix seconds)", 1_u64 << 40));
    }
}
