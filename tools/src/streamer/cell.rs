//! One CSV cell to a value: a number (units such as `34 %` or `81559 MiB` allowed after it),
//! a boolean, a string, or nothing at all (empty cells and markers such as `[N/A]`).
//!
//! The streamer is schema-agnostic, so every cell goes through here; the rules are listed in
//! `spec/telemetry.md` ("Cells").

use serde_json::Value;

/// Longest unit accepted after a number (`MiB`, `MHz`, `%`, `W`, `C`, `GB/s`).
const UNIT_BYTES_MAX: usize = 8;

/// Whether a trimmed cell carries no value: empty, `N/A`, or an nvidia-smi marker in
/// brackets (`[N/A]`, `[Not Supported]`, `[Unknown Error]`).
pub fn is_missing(cell: &str) -> bool {
    cell.is_empty()
        || cell.eq_ignore_ascii_case("n/a")
        || cell.eq_ignore_ascii_case("na")
        || (cell.len() >= 2 && cell.starts_with('[') && cell.ends_with(']'))
}

/// The number a trimmed cell holds, with an optional unit after it (`250.00 W`, `34 %`,
/// `45C`). `None` for anything else, and for NaN and infinities, which JSON cannot carry.
/// The number is kept as written: `81559 MiB` is 81559, not bytes.
pub fn parse_number(cell: &str) -> Option<f64> {
    let (number, unit) = split_unit(cell);
    if !unit.is_empty() && !is_unit(unit) {
        return None;
    }
    let number = number.trim_end();
    // `f64::from_str` also takes "inf", "nan" and "infinity"; a digit must be present.
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Splits `12.5 MiB` into `("12.5 ", "MiB")`: the unit is the trailing run of letters,
/// `%`, `/` and `°`.
fn split_unit(cell: &str) -> (&str, &str) {
    let unit_start = cell
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphabetic() || matches!(c, '%' | '/' | '°'))
        .last()
        .map_or(cell.len(), |(i, _)| i);
    let (number, unit) = cell.split_at(unit_start);
    // An exponent (`1e5`) or a bare word is not a unit.
    if number.is_empty() || number.ends_with(['e', 'E']) {
        return (cell, "");
    }
    (number, unit)
}

fn is_unit(unit: &str) -> bool {
    unit.len() <= UNIT_BYTES_MAX && !unit.eq_ignore_ascii_case("e")
}

/// A boolean spelled `true/false`, `yes/no` or `enabled/disabled` (any case).
pub fn parse_bool(cell: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "yes", "enabled"];
    const FALSE: [&str; 3] = ["false", "no", "disabled"];
    if TRUE.iter().any(|t| cell.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| cell.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// A trimmed cell as an attribute value: a number (an integer stays an integer), a boolean,
/// or the text; `None` when the cell is missing.
pub fn attribute(cell: &str) -> Option<Value> {
    if is_missing(cell) {
        return None;
    }
    if let Some(n) = parse_number(cell) {
        let (digits, _) = split_unit(cell);
        let digits = digits.trim_end();
        if let Ok(i) = digits.parse::<i64>() {
            return Some(Value::from(i));
        }
        return Some(Value::from(n));
    }
    if let Some(b) = parse_bool(cell) {
        return Some(Value::Bool(b));
    }
    Some(Value::String(cell.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_their_value_and_lose_their_unit() {
        assert_eq!(parse_number("34 %"), Some(34.0));
        assert_eq!(parse_number("81559 MiB"), Some(81559.0));
        assert_eq!(parse_number("250.00 W"), Some(250.0));
        assert_eq!(parse_number("1410 MHz"), Some(1410.0));
        assert_eq!(parse_number("45 C"), Some(45.0));
        assert_eq!(parse_number("45C"), Some(45.0));
        assert_eq!(parse_number("-3.5"), Some(-3.5));
        assert_eq!(parse_number("1e5"), Some(100000.0));
        assert_eq!(parse_number("2.5E-3"), Some(0.0025));
        assert_eq!(parse_number("0"), Some(0.0));
    }

    #[test]
    fn words_versions_and_non_finite_values_are_not_numbers() {
        for cell in [
            "",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "P0",
            "nvidia0",
            "535.129.03",
            "GPU-5fd4",
            "00000000:19:00.0",
            "[N/A]",
            "12 furlongs per fortnight",
            "1.2.3 W",
            "e",
            "MiB",
        ] {
            assert_eq!(parse_number(cell), None, "{cell:?}");
        }
    }

    #[test]
    fn markers_and_empty_cells_are_missing() {
        for cell in ["", "[N/A]", "N/A", "n/a", "[Not Supported]", "[Unknown Error]"] {
            assert!(is_missing(cell), "{cell:?}");
            assert_eq!(attribute(cell), None);
        }
        assert!(!is_missing("[x"));
    }

    #[test]
    fn attributes_are_numbers_booleans_or_text() {
        assert_eq!(attribute("7"), Some(json!(7)));
        assert_eq!(attribute("300.50 W"), Some(json!(300.5)));
        assert_eq!(attribute("Enabled"), Some(json!(true)));
        assert_eq!(attribute("no"), Some(json!(false)));
        assert_eq!(attribute("Default"), Some(json!("Default")));
        assert_eq!(attribute("535.129.03"), Some(json!("535.129.03")));
    }
}
