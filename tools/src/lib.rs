//! Shared code of the command-line tools (`mqctl`, `mq-bench`, and the telemetry tools):
//! broker address lists, plain-text tables, and human-readable numbers.
#![deny(missing_docs, missing_debug_implementations)]

pub mod api;
pub mod collector;
pub mod gateway;
pub mod streamer;
pub mod table;
pub mod telemetry;

/// The broker address when neither `--addr` nor `MQ_ADDR` names one.
pub const ADDR_DEFAULT: &str = "127.0.0.1:7420";

/// Splits `--addr` text into broker addresses: `host:port`, comma-separated, tried in order.
pub fn split_addrs(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect()
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn human_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, rounded: `1,234/s`, or `-` when there is no rate (a single sample).
pub fn human_rate(per_s: Option<f64>) -> String {
    match per_s {
        Some(r) => format!("{}/s", human_count(r.max(0.0).round() as u64)),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_on_commas() {
        assert_eq!(split_addrs("a:1, b:2,,"), ["a:1", "b:2"]);
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(human_count(0), "0");
        assert_eq!(human_count(1234567), "1,234,567");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(human_rate(Some(999.6)), "1,000/s");
        assert_eq!(human_rate(None), "-");
    }
}
