//! Time as the core sees it: always handed in by the adapter, never read here.
//!
//! Two clocks are needed: a monotonic [`Instant`] for expiry and timeouts (so a
//! simulated clock can drive tests), and wall-clock [`UnixTime`] for the
//! `created_at` and audit timestamps that clients see.

use std::fmt;
use std::time::{Duration, Instant};

/// Both clocks, read once by the adapter per input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, used for cache expiry and request deadlines.
    pub instant: Instant,
    /// Wall-clock time, used for timestamps in responses and events.
    pub unix: UnixTime,
}

impl Now {
    /// Both clocks moved forward by `d`.
    pub fn advanced(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            unix: UnixTime::from_nanos(self.unix.as_nanos().saturating_add(d.as_nanos() as i128)),
        }
    }
}

/// Nanoseconds since 1970-01-01T00:00:00Z (negative before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(i128);

/// Go's zero `time.Time`, `0001-01-01T00:00:00Z`, which KES prints for keys
/// without metadata.
pub const GO_ZERO_TIME: UnixTime = UnixTime(-62_135_596_800 * 1_000_000_000);

impl UnixTime {
    /// From nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self(nanos)
    }

    /// From seconds and nanoseconds since the epoch (protobuf `Timestamp`).
    pub const fn from_parts(secs: i64, nanos: i32) -> Self {
        Self(secs as i128 * 1_000_000_000 + nanos as i128)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> i128 {
        self.0
    }

    /// Whole seconds and the nanosecond remainder (always 0..1e9).
    pub fn to_parts(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000);
        (secs as i64, nanos as i32)
    }

    /// Parses RFC 3339 as Go writes it (`2024-03-01T12:00:00.123456789Z`,
    /// or with a `+hh:mm` offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let (nanos, offset_secs) = fraction_and_offset(s, 19)?;
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
        Some(Self(secs as i128 * 1_000_000_000 + nanos))
    }
}

/// The optional `.fraction` at `i` and the zone (`Z` or `±hh:mm`) that must
/// end the string: nanoseconds and the offset in seconds east of UTC.
fn fraction_and_offset(s: &str, mut i: usize) -> Option<(i128, i64)> {
    let b = s.as_bytes();
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        nanos = frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32);
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let offset = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = digits(i + 1..i + 3)? * 3600 + digits(i + 4..i + 6)? * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    Some((nanos, offset))
}

/// RFC 3339 in UTC with the fraction trimmed of trailing zeros, as Go's
/// `time.RFC3339Nano` prints it.
impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = self.to_parts();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            y,
            m,
            d,
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )?;
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a Go duration string (`5m`, `1h30m`, `1.5s`, `300ms`, `0`).
///
/// Negative values are rejected: no KES setting has a meaningful negative
/// duration, and v0.24 rejects them too.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("negative duration '{orig}'"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("invalid duration '{orig}'"));
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration '{orig}'"))?;
        if num_end == 0 {
            return Err(format!("invalid duration '{orig}'"));
        }
        let value: f64 =
            rest[..num_end].parse().map_err(|_| format!("invalid duration '{orig}'"))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration '{orig}'")),
            _ => return Err(format!("unknown unit '{unit}' in duration '{orig}'")),
        };
        total += value * scale;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("duration '{orig}' is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let t = UnixTime::from_parts(1_709_294_400, 123_456_789);
        assert_eq!(t.to_string(), "2024-03-01T12:00:00.123456789Z");
        assert_eq!(UnixTime::from_parts(1_735_689_600, 0).to_string(), "2025-01-01T00:00:00Z");
        assert_eq!(GO_ZERO_TIME.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(UnixTime::from_parts(0, 500_000_000).to_string(), "1970-01-01T00:00:00.5Z");
    }

    #[test]
    fn parses_rfc3339() {
        let t = UnixTime::parse_rfc3339("2024-03-01T12:00:00.123456789Z").unwrap();
        assert_eq!(t, UnixTime::from_parts(1_709_294_400, 123_456_789));
        let t = UnixTime::parse_rfc3339("2024-03-01T13:00:00+01:00").unwrap();
        assert_eq!(t, UnixTime::from_parts(1_709_294_400, 0));
        assert!(UnixTime::parse_rfc3339("2024-13-01T00:00:00Z").is_none());
        assert!(UnixTime::parse_rfc3339("garbage").is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_go_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("-5s").is_err());
        assert!(parse_go_duration("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_round_trip(secs in -62_135_596_800i64..253_402_300_799i64, nanos in 0i32..1_000_000_000) {
            let t = UnixTime::from_parts(secs, nanos);
            proptest::prop_assert_eq!(UnixTime::parse_rfc3339(&t.to_string()), Some(t));
        }
    }
}
