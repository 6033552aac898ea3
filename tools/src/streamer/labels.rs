//! The `labels_raw` cell of a DCGM export: `K="v",K2="v2"`, Prometheus-style labels as
//! dcgm-exporter printed them, into a label map.
//!
//! # Format
//! `label = key "=" value`, labels separated by `,` (spaces around them allowed). A key is
//! `[A-Za-z_][A-Za-z0-9_.:-]*`. A value is quoted (`"..."`: inside it `""` and `\"` are a
//! quote and `\\` a backslash) or bare (up to the next `,`). After the CSV layer has
//! removed its own quoting, the real file's cells read
//! `DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="mtv5-dgx1-hgpu-031",...`.

use std::collections::BTreeMap;

/// Labels parsed from one cell, and whether the cell had text that did not parse (the
/// labels before that point are kept).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// Label values by key.
    pub map: BTreeMap<String, String>,
    /// Whether part of the cell was not a label.
    pub malformed: bool,
}

/// Parses a `labels_raw` cell. Never fails: what parses is kept, and
/// [`Labels::malformed`] says whether anything was left over.
pub fn parse(cell: &str) -> Labels {
    let mut labels = Labels::default();
    let mut rest = cell.trim();
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((key, value, after)) => {
                labels.map.insert(key.to_string(), value);
                rest = after.trim_start();
                match rest.strip_prefix(',') {
                    Some(r) => rest = r.trim_start(),
                    None if rest.is_empty() => {}
                    None => {
                        labels.malformed = true;
                        break;
                    }
                }
            }
            None => {
                labels.malformed = true;
                break;
            }
        }
    }
    labels
}

/// One `key=value` at the start of `text`: the key, the unescaped value, and the text after.
fn parse_one(text: &str) -> Option<(&str, String, &str)> {
    let eq = text.find('=')?;
    let key = text[..eq].trim();
    if !is_key(key) {
        return None;
    }
    let after_eq = text[eq + 1..].trim_start();
    match after_eq.strip_prefix('"') {
        Some(quoted) => parse_quoted(quoted).map(|(value, after)| (key, value, after)),
        None => {
            let end = after_eq.find(',').unwrap_or(after_eq.len());
            let value = after_eq[..end].trim_end();
            Some((key, value.to_string(), &after_eq[end..]))
        }
    }
}

/// The value of a quoted label (the opening quote already consumed) and the text after the
/// closing quote; `None` if the quote is never closed.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' if chars.peek().map(|&(_, n)| n) == Some('"') => {
                chars.next();
                value.push('"');
            }
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, n @ ('"' | '\\'))) => value.push(n),
                Some((_, 'n')) => value.push('\n'),
                Some((_, n)) => {
                    value.push('\\');
                    value.push(n);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_dcgm_cell_parses_into_every_label() {
        let cell = r#"DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="mtv5-dgx1-hgpu-031",__name__="DCGM_FI_DEV_GPU_UTIL",gpu="0",instance="mtv5-dgx1-hgpu-031:9400""#;
        let labels = parse(cell);
        assert!(!labels.malformed);
        assert_eq!(
            labels.map,
            map(&[
                ("DCGM_FI_DRIVER_VERSION", "535.129.03"),
                ("Hostname", "mtv5-dgx1-hgpu-031"),
                ("__name__", "DCGM_FI_DEV_GPU_UTIL"),
                ("gpu", "0"),
                ("instance", "mtv5-dgx1-hgpu-031:9400"),
            ])
        );
    }

    #[test]
    fn quotes_commas_and_escapes_inside_values_survive() {
        let labels = parse(r#"a="x,y", b="say ""hi""", c="back\\slash \"q\"", d=bare , e="""#);
        assert!(!labels.malformed);
        assert_eq!(
            labels.map,
            map(&[
                ("a", "x,y"),
                ("b", "say \"hi\""),
                ("c", "back\\slash \"q\""),
                ("d", "bare"),
                ("e", ""),
            ])
        );
    }

    #[test]
    fn malformed_cells_keep_what_parsed() {
        let labels = parse(r#"a="1",b="unterminated"#);
        assert!(labels.malformed);
        assert_eq!(labels.map, map(&[("a", "1")]));
        let labels = parse(r#"a="1" junk,b="2""#);
        assert!(labels.malformed);
        assert_eq!(labels.map, map(&[("a", "1")]));
        for junk in ["no equals sign", "=\"v\"", "1bad=\"v\"", "a b=\"v\""] {
            let labels = parse(junk);
            assert!(labels.malformed, "{junk:?}");
            assert!(labels.map.is_empty(), "{junk:?}");
        }
    }

    #[test]
    fn empty_cells_have_no_labels_and_are_fine() {
        assert_eq!(parse(""), Labels::default());
        assert_eq!(parse("  "), Labels::default());
    }
}
