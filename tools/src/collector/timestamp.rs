//! Timestamps as the collector stores and serves them: milliseconds since the Unix epoch
//! (`i64`), written as RFC 3339 UTC with exactly three fraction digits
//! (`2026-11-29T09:12:00.123Z`).
//!
//! Formatting is done here by hand (civil-from-days arithmetic, no allocation), because a
//! telemetry answer formats tens of thousands of times and a general formatter would be
//! most of its cost. Parsing takes any RFC 3339 form (offsets, any number of fraction
//! digits) through `jiff`; the canonical form takes a fast path.

/// The earliest time a sample may carry: 0000-01-01T00:00:00Z.
pub const TS_MS_MIN: i64 = -62_167_219_200_000;
/// The latest time a sample may carry: 9999-12-31T23:59:59.999Z.
pub const TS_MS_MAX: i64 = 253_402_300_799_999;

/// Bytes of a formatted timestamp.
pub const TS_BYTES: usize = 24;

/// Writes `ts_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// # Panics
/// If `ts_ms` is outside [`TS_MS_MIN`]`..=`[`TS_MS_MAX`] (every stored time is checked
/// against that range when it enters).
pub fn format_ms(ts_ms: i64) -> [u8; TS_BYTES] {
    assert!((TS_MS_MIN..=TS_MS_MAX).contains(&ts_ms), "time out of range: {ts_ms}");
    let days = ts_ms.div_euclid(86_400_000);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], year as u64);
    put_digits(&mut out[5..7], month as u64);
    put_digits(&mut out[8..10], day as u64);
    put_digits(&mut out[11..13], (ms_of_day / 3_600_000) as u64);
    put_digits(&mut out[14..16], (ms_of_day / 60_000 % 60) as u64);
    put_digits(&mut out[17..19], (ms_of_day / 1000 % 60) as u64);
    put_digits(&mut out[20..23], (ms_of_day % 1000) as u64);
    out
}

/// [`format_ms`] as a `String`.
pub fn format_ms_string(ts_ms: i64) -> String {
    let bytes = format_ms(ts_ms);
    // The formatter writes ASCII digits and punctuation only.
    String::from_utf8(bytes.to_vec()).expect("ascii")
}

/// Parses an RFC 3339 time (`2026-11-29T09:12:00.123Z`, `2026-11-29T10:12:00+01:00`, ...)
/// into milliseconds since the epoch. Fraction digits past milliseconds are dropped
/// (rounded toward the past).
///
/// # Errors
/// A text that is not RFC 3339, or a time outside years 0000 to 9999.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    if let Some(ms) = parse_canonical(text.as_bytes()) {
        return Ok(ms);
    }
    let ts: jiff::Timestamp =
        text.parse().map_err(|e| format!("not an RFC 3339 time ({text:?}): {e}"))?;
    let ms = ts.as_millisecond();
    if !(TS_MS_MIN..=TS_MS_MAX).contains(&ms) {
        return Err(format!("time out of range: {text:?}"));
    }
    Ok(ms)
}

/// Longest time the HTTP API takes, in bytes (ASCII, so characters too): room for 38
/// fraction digits, and a bound on the query string.
pub const API_TIME_BYTES_MAX: usize = 64;

/// Parses a time given to the HTTP API: exactly RFC 3339's `date-time` (what OpenAPI's
/// `format: date-time` means, so the code accepts what the schema does and nothing else):
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, `T` and `Z` in either case, seconds
/// up to 60 (a leap second counts as the minute's last millisecond), any number of fraction
/// digits (cut to milliseconds, toward the past). A time outside the years 0000 to 9999
/// once its offset is applied (`0000-01-01T00:00:00+01:00`) is clamped to that range:
/// as a query bound it selects the same samples.
///
/// # Errors
/// Text that is not an RFC 3339 `date-time`, or a date that does not exist.
pub fn parse_api_time(text: &str) -> Result<i64, String> {
    if text.len() > API_TIME_BYTES_MAX {
        return Err(format!("a date-time is at most {API_TIME_BYTES_MAX} characters"));
    }
    parse_date_time(text.as_bytes())
        .map(|ms| ms.clamp(TS_MS_MIN, TS_MS_MAX))
        .ok_or_else(|| format!("not an RFC 3339 date-time such as 2026-11-29T09:00:00Z: {text:?}"))
}

/// RFC 3339 `date-time` (section 5.6) to ms since the epoch, offset applied; `None` if
/// the text is not one.
fn parse_date_time(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])? as i64;
    let (month, day) = (digits(&b[5..7])? as u32, digits(&b[8..10])? as u32);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (mut ms, rest) = fraction_ms(&b[19..])?;
    let offset_minutes = offset_minutes(rest)?;
    let second = if second == 60 {
        ms = 999;
        59
    } else {
        second
    };
    let days = days_from_civil(year, month, day);
    let local = days * 86_400_000 + (hour * 3_600_000 + minute * 60_000 + second * 1000) as i64;
    Some(local + ms as i64 - offset_minutes * 60_000)
}

/// An optional `.digits` fraction as milliseconds (toward the past), and what follows it.
fn fraction_ms(b: &[u8]) -> Option<(u64, &[u8])> {
    let Some(rest) = b.strip_prefix(b".") else { return Some((0, b)) };
    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut ms = 0;
    for i in 0..3 {
        ms = ms * 10 + rest.get(i).filter(|_| i < n).map_or(0, |c| u64::from(c - b'0'));
    }
    Some((ms, &rest[n..]))
}

/// `Z` (or `z`) as 0, `+HH:MM` or `-HH:MM` as signed minutes; `None` for anything else.
fn offset_minutes(b: &[u8]) -> Option<i64> {
    match b {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = (hours * 60 + minutes) as i64;
            Some(if *sign == b'-' { -total } else { total })
        }
        _ => None,
    }
}

/// The fast path: exactly `YYYY-MM-DDTHH:MM:SS.mmmZ`, as the streamer writes it.
fn parse_canonical(b: &[u8]) -> Option<i64> {
    if b.len() != TS_BYTES || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let year = digits(&b[0..4])? as i64;
    let month = digits(&b[5..7])? as u32;
    let day = digits(&b[8..10])? as u32;
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let ms = digits(&b[20..23])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400_000 + (hour * 3_600_000 + minute * 60_000 + second * 1000 + ms) as i64)
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
}

fn put_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    debug_assert_eq!(n, 0, "number wider than its field");
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_matches_jiff_across_the_range() {
        let mut ts = TS_MS_MIN;
        while ts < TS_MS_MAX {
            let ours = format_ms_string(ts);
            let theirs = jiff::Timestamp::from_millisecond(ts).unwrap();
            assert_eq!(parse_rfc3339_ms(&ours).unwrap(), ts, "{ours}");
            assert_eq!(ours.parse::<jiff::Timestamp>().unwrap(), theirs, "{ours}");
            ts += 77_777_777_777; // about 2.5 years and an odd millisecond count
        }
        assert_eq!(format_ms_string(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms_string(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms_string(TS_MS_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms_string(TS_MS_MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_ms_string(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// Goal: the API's times are RFC 3339 `date-time`, no more and no less. Method: forms
    /// the grammar allows (case, offsets, fractions, leap second, clamped extremes) against
    /// the times they name, and near misses (ISO 8601 forms outside RFC 3339) refused.
    #[test]
    fn api_times_are_rfc3339_date_times() {
        let base = parse_rfc3339_ms("2026-11-29T09:12:00.123Z").unwrap();
        for (text, ms) in [
            ("2026-11-29T09:12:00.123Z", base),
            ("2026-11-29t09:12:00.123z", base),
            ("2026-11-29T10:42:00.123+01:30", base),
            ("2026-11-29T09:12:00.1239999999999Z", base),
            ("2026-11-29T09:12:00.1Z", base - 23),
            ("2026-11-29T09:12:00Z", base - 123),
            ("2026-11-29T09:11:60Z", base - 123 - 1),
            ("0000-01-01T00:00:00+01:00", TS_MS_MIN),
            ("9999-12-31T23:59:59-23:59", TS_MS_MAX),
            (&format!("2026-11-29T09:12:00.{}Z", "1".repeat(API_TIME_BYTES_MAX - 21)), base - 12),
        ] {
            assert_eq!(parse_api_time(text), Ok(ms), "{text}");
        }
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29T09:12Z",
            "2026-11-29 09:12:00Z",
            "2026-11-29T09:12:00",
            "2026-11-29T09:12:00.Z",
            "2026-11-29T09:12:00+01",
            "2026-11-29T09:12:00+0100",
            "2026-11-29T09:12:00+24:00",
            "2026-02-29T09:12:00Z",
            "2026-11-29T09:12:61Z",
            "+2026-11-29T09:12:00Z",
            "2026-11-29T09:12:00Z\n",
            &format!("2026-11-29T09:12:00.{}Z", "1".repeat(API_TIME_BYTES_MAX - 20)),
        ] {
            assert!(parse_api_time(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn every_rfc3339_form_parses_and_junk_does_not() {
        let base = parse_rfc3339_ms("2026-11-29T09:12:00.123Z").unwrap();
        assert_eq!(format_ms_string(base), "2026-11-29T09:12:00.123Z");
        assert_eq!(parse_rfc3339_ms("2026-11-29T10:12:00.123+01:00").unwrap(), base);
        assert_eq!(parse_rfc3339_ms("2026-11-29T09:12:00.123456Z").unwrap(), base);
        assert_eq!(parse_rfc3339_ms("2026-11-29T09:12:00Z").unwrap(), base - 123);
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00.000Z",
            "2026-02-30T00:00:00.000Z",
            "2026-11-29T24:00:00.000Z",
            "2026-11-29",
            "1700000000",
            "2026-11-29T09:12:00.123",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad:?} parsed");
        }
    }
}
