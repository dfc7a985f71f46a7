//! RFC 3339 timestamps as the TOC's `modtime` field carries them.
//!
//! The reference writer stores UTC rounded to the second (`2006-01-02T15:04:05Z`); other
//! producers may add fractional seconds or a numeric offset, so the parser takes the whole of
//! RFC 3339's `date-time`. Small enough to own instead of adding a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;

/// Parses an RFC 3339 `date-time`; `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, min, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is a leap second; like Go, accept it as the next second.
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let (nanos, zone) = fraction(&b[19..])?;
    let offset = zone_offset(zone)?;
    let days = days_from_civil(year, month, day);
    let secs = days * SECS_PER_DAY + hour * 3600 + min * 60 + sec - offset;
    Some(from_unix(secs, nanos))
}

/// Formats whole seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(SECS_PER_DAY);
    let rem = unix_secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn from_unix(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

/// `n` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    b.get(at..at + n)?.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// Optional `.fraction`, returning nanoseconds and the rest (the zone).
fn fraction(b: &[u8]) -> Option<(u32, &[u8])> {
    let Some(rest) = b.strip_prefix(b".") else {
        return Some((0, b));
    };
    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        let d = rest
            .get(i)
            .filter(|_| i < n)
            .map_or(0, |c| u32::from(c - b'0'));
        nanos = nanos * 10 + d;
    }
    Some((nanos, &rest[n..]))
}

/// `Z` or `±HH:MM` → seconds east of UTC.
fn zone_offset(z: &[u8]) -> Option<i64> {
    if z == b"Z" || z == b"z" {
        return Some(0);
    }
    if z.len() != 6 || z[3] != b':' {
        return None;
    }
    let sign = match z[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = (digits(z, 1, 2)?, digits(z, 4, 2)?);
    (h < 24 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> i64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    #[test]
    fn parses_utc_fraction_and_offsets() {
        let t = parse_rfc3339("2021-03-04T05:06:07Z").unwrap();
        assert_eq!(secs(t), 1_614_834_367);
        let f = parse_rfc3339("2021-03-04T05:06:07.25Z").unwrap();
        assert_eq!(
            f.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(),
            250_000_000
        );
        let o = parse_rfc3339("2021-03-04T07:06:07+02:00").unwrap();
        assert_eq!(secs(o), 1_614_834_367);
        assert_eq!(secs(parse_rfc3339("1969-12-31T23:59:59Z").unwrap()), -1);
        assert_eq!(
            secs(parse_rfc3339("2000-02-29T00:00:00Z").unwrap()),
            951_782_400
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "2021-03-04",
            "2021-03-04T05:06:07",
            "2021-02-29T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-03-04T25:06:07Z",
            "2021-03-04T05:06:07.Z",
            "2021-03-04T05:06:07+0200",
            "2021-03-04T05:06:07X",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_614_834_367), "2021-03-04T05:06:07Z");
        for s in [-86_401, 951_782_399, 4_102_444_800, 253_402_300_799] {
            assert_eq!(secs(parse_rfc3339(&format_rfc3339(s)).unwrap()), s);
        }
    }
}
