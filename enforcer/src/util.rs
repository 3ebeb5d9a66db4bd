//! Small helpers: clocks, time formatting, sysctls.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// Nanoseconds of CLOCK_BOOTTIME, the clock of `bpf_ktime_get_boot_ns()`
/// (it goes on while the machine is suspended, as wall time does).
pub fn boottime_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_BOOTTIME)
}

fn clock_ns(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A wall-clock time as `bpf_ktime_get_boot_ns()` will read it then (0 for
/// a time before boot).
pub fn boottime_of(t: SystemTime) -> u64 {
    let now = SystemTime::now();
    let boot = boottime_ns();
    match t.duration_since(now) {
        Ok(ahead) => boot.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX)),
        Err(e) => boot.saturating_sub(u64::try_from(e.duration().as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// The wall-clock time of a `bpf_ktime_get_boot_ns()` reading.
pub fn wall_time_of_boottime(boot_ns: u64) -> SystemTime {
    let now = SystemTime::now();
    let boot = boottime_ns();
    if boot_ns >= boot {
        now + Duration::from_nanos(boot_ns - boot)
    } else {
        now - Duration::from_nanos(boot - boot_ns)
    }
}

/// The wall-clock time of a `bpf_ktime_get_ns()` timestamp.
pub fn wall_time_of(ktime_ns: u64) -> SystemTime {
    let now_mono = monotonic_ns();
    let now = SystemTime::now();
    now - Duration::from_nanos(now_mono.saturating_sub(ktime_ns))
}

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 3339 (UTC, microseconds) of a time.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes a sysctl of the current network namespace
/// (`net.ipv4.ip_forward` -> `/proc/sys/net/ipv4/ip_forward`).
pub fn write_sysctl(name: &str, value: &str) -> std::io::Result<()> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    std::fs::write(path, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
    }
}
