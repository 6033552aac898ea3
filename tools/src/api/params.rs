//! Validation of the telemetry query's parameters and of GPU ids in paths.
//!
//! Parameters are read from the raw query string (so `metric` can repeat, and a repeated
//! single-valued parameter is an error rather than silently one of its values). Unknown
//! parameters are ignored.
//!
//! Each check here is the constraint the OpenAPI document states for the parameter
//! (pattern, `format: date-time`, length, range, enum), no more and no less, so a client
//! generated from the document never sends what the server refuses; the patterns are
//! constants here that the document takes. Two rules span parameters and are in the
//! descriptions only: `start_time` not after `end_time`, and the whole query string at
//! most [`QUERY_BYTES_MAX`] bytes (which the longest schema-valid query stays under).

use super::ApiError;
use crate::collector::query::{decode_cursor, Order, Query, LIMIT_DEFAULT, LIMIT_MAX};
use crate::collector::series::{SeriesQuery, POINTS_DEFAULT, POINTS_MAX};
use crate::collector::timestamp::{parse_api_time, TS_MS_MAX, TS_MS_MIN};
use crate::telemetry::valid_gpu_id;

/// Longest query string accepted, in bytes: more than the longest query the OpenAPI
/// document allows (32 metrics of 128 four-byte characters, percent-encoded, is about
/// 49 KiB), so a schema-valid query never meets it, and less than the longest URI hyper
/// reads (64 KiB; it answers 414 past that).
pub const QUERY_BYTES_MAX: usize = 60 * 1024;
/// Most `metric` parameters in one query: few enough that the longest schema-valid query
/// fits [`QUERY_BYTES_MAX`]. Leave `metric` out for every metric.
pub const METRIC_PARAMS_MAX: usize = 32;
/// Longest `metric` parameter, in characters (what JSON Schema's `maxLength` counts). A
/// stored name is at most 128 bytes, so a longer one in bytes just matches nothing.
pub const METRIC_PARAM_CHARS_MAX: usize = 128;
/// The pattern of a GPU id in a path: `[A-Za-z0-9._:-]{1,128}`, but not `.` or `..`.
pub const GPU_ID_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$";
/// The pattern of a `metric` parameter: no control characters (Unicode `Cc`).
pub const METRIC_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// Checks a GPU id taken from a path (already percent-decoded).
///
/// # Errors
/// 400 for an id outside `[A-Za-z0-9._:-]{1,128}` (traversal, slashes, NUL, ...).
pub fn check_gpu_id(id: &str) -> Result<(), ApiError> {
    if valid_gpu_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad("gpu_id", "gpu_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"))
    }
}

/// Parses and validates the query string of a telemetry request.
///
/// # Errors
/// 400 naming the parameter at fault.
pub fn parse_telemetry_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > QUERY_BYTES_MAX {
        return Err(ApiError::bad("query", format!("query string over {QUERY_BYTES_MAX} bytes")));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad("query", format!("unreadable query string: {e}")))?;
    let mut query = Query {
        start_ms: TS_MS_MIN,
        end_ms: TS_MS_MAX,
        metrics: Vec::new(),
        limit: LIMIT_DEFAULT,
        order: Order::Asc,
        cursor: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &pairs {
        let once = ["start_time", "end_time", "limit", "cursor", "order"];
        if let Some(n) = once.iter().find(|n| *n == name) {
            if seen.contains(n) {
                return Err(ApiError::bad(n, format!("{n} given more than once")));
            }
            seen.push(n);
        }
        match name.as_str() {
            "start_time" => query.start_ms = parse_time("start_time", value)?,
            "end_time" => query.end_ms = parse_time("end_time", value)?,
            "limit" => query.limit = parse_limit(value)?,
            "order" => {
                query.order = Order::parse(value)
                    .ok_or_else(|| ApiError::bad("order", "order must be asc or desc"))?;
            }
            "cursor" => {
                let key = decode_cursor(value)
                    .ok_or_else(|| ApiError::bad("cursor", "not a cursor from a previous page"))?;
                query.cursor = Some(key);
            }
            "metric" => {
                check_metric(value, query.metrics.len())?;
                query.metrics.push(value.clone());
            }
            _ => {}
        }
    }
    if query.start_ms > query.end_ms {
        return Err(ApiError::bad("start_time", "start_time is after end_time"));
    }
    Ok(query)
}

/// Parses and validates the query string of a series request: `start_time` and `end_time`
/// (both required), `metric` (repeatable) and `points`.
///
/// # Errors
/// 400 naming the parameter at fault.
pub fn parse_series_query(raw: Option<&str>) -> Result<SeriesQuery, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > QUERY_BYTES_MAX {
        return Err(ApiError::bad("query", format!("query string over {QUERY_BYTES_MAX} bytes")));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad("query", format!("unreadable query string: {e}")))?;
    let (mut start, mut end, mut points) = (None, None, None);
    let mut metrics = Vec::new();
    for (name, value) in &pairs {
        let slot = match name.as_str() {
            "start_time" => &mut start,
            "end_time" => &mut end,
            "points" => &mut points,
            "metric" => {
                check_metric(value, metrics.len())?;
                metrics.push(value.clone());
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(ApiError::bad(name, format!("{name} given more than once")));
        }
        *slot = Some(value.as_str());
    }
    let start_ms = parse_time("start_time", start.ok_or_else(|| required("start_time"))?)?;
    let end_ms = parse_time("end_time", end.ok_or_else(|| required("end_time"))?)?;
    if start_ms > end_ms {
        return Err(ApiError::bad("start_time", "start_time is after end_time"));
    }
    let points = match points {
        None => POINTS_DEFAULT,
        Some(text) => parse_integer(text, 1..=POINTS_MAX).ok_or_else(|| {
            ApiError::bad("points", format!("points must be an integer from 1 to {POINTS_MAX}"))
        })?,
    };
    Ok(SeriesQuery { start_ms, end_ms, metrics, points })
}

fn required(param: &str) -> ApiError {
    ApiError::bad(param, format!("{param} is required"))
}

fn check_metric(value: &str, known: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > METRIC_PARAM_CHARS_MAX || value.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "metric",
            format!(
                "metric must be 1 to {METRIC_PARAM_CHARS_MAX} characters, no control characters"
            ),
        ));
    }
    if known == METRIC_PARAMS_MAX {
        return Err(ApiError::bad("metric", format!("more than {METRIC_PARAMS_MAX} metrics")));
    }
    Ok(())
}

fn parse_time(param: &str, value: &str) -> Result<i64, ApiError> {
    parse_api_time(value).map_err(|e| ApiError::bad(param, format!("{param}: {e}")))
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    parse_integer(value, 1..=LIMIT_MAX).ok_or_else(|| {
        ApiError::bad("limit", format!("limit must be an integer from 1 to {LIMIT_MAX}"))
    })
}

/// Decimal digits only (no sign, no spaces: what an OpenAPI `integer` is) within `range`.
fn parse_integer(text: &str, range: std::ops::RangeInclusive<usize>) -> Option<usize> {
    let n = text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse::<usize>().ok())??;
    range.contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(raw: &str) -> String {
        parse_telemetry_query(Some(raw)).unwrap_err().body.param.unwrap()
    }

    #[test]
    fn good_queries_parse() {
        let q = parse_telemetry_query(Some(
            "start_time=2026-11-29T09:00:00Z&end_time=2026-11-29T10:00:00%2B01:00&metric=A&metric=B&limit=5&x=1",
        ))
        .unwrap();
        assert_eq!(q.metrics, ["A", "B"]);
        assert_eq!(q.limit, 5);
        assert_eq!(q.end_ms - q.start_ms, 0, "10:00+01:00 is 09:00Z");
        assert_eq!(q.order, Order::Asc);
        let q = parse_telemetry_query(None).unwrap();
        assert_eq!((q.start_ms, q.end_ms, q.limit), (TS_MS_MIN, TS_MS_MAX, LIMIT_DEFAULT));
        let q = parse_telemetry_query(Some("order=desc&limit=3")).unwrap();
        assert_eq!((q.order, q.limit), (Order::Desc, 3));
        let long = "é".repeat(METRIC_PARAM_CHARS_MAX);
        let q = parse_telemetry_query(Some(&format!("metric={long}"))).unwrap();
        assert_eq!(q.metrics, [long], "128 characters, 256 bytes: a name that matches nothing");
    }

    #[test]
    fn bad_parameters_name_themselves() {
        assert_eq!(param_of("limit=abc"), "limit");
        assert_eq!(param_of("limit=-1"), "limit");
        assert_eq!(param_of("limit=0"), "limit");
        assert_eq!(param_of("limit=1000000000000"), "limit");
        assert_eq!(param_of("limit=1&limit=2"), "limit");
        assert_eq!(param_of("start_time=yesterday"), "start_time");
        assert_eq!(param_of("end_time=2026-11-29T10:00:00"), "end_time");
        assert_eq!(
            param_of("start_time=2026-11-29T10:00:00Z&end_time=2026-11-29T09:00:00Z"),
            "start_time"
        );
        assert_eq!(param_of("limit=+5"), "limit");
        assert_eq!(param_of("cursor=xyz"), "cursor");
        assert_eq!(param_of("cursor="), "cursor");
        assert_eq!(param_of("order=latest"), "order");
        assert_eq!(param_of("order=asc&order=desc"), "order");
        assert_eq!(param_of("metric="), "metric");
        assert_eq!(param_of("metric=a%0Ab"), "metric");
        assert_eq!(param_of(&format!("metric={}", "x".repeat(129))), "metric");
        assert_eq!(param_of("start_time=2026-11-29T09:00Z"), "start_time");
        assert_eq!(param_of(&"a=b&".repeat(QUERY_BYTES_MAX / 4 + 1)), "query");
    }

    #[test]
    fn series_queries_need_a_window() {
        let window = "start_time=2026-11-29T09:00:00Z&end_time=2026-11-29T10:00:00Z";
        let q = parse_series_query(Some(&format!("{window}&metric=A&points=60"))).unwrap();
        assert_eq!((q.end_ms - q.start_ms, q.points, q.metrics.len()), (3_600_000, 60, 1));
        assert_eq!(parse_series_query(Some(window)).unwrap().points, POINTS_DEFAULT);
        let param = |raw: &str| parse_series_query(Some(raw)).unwrap_err().body.param.unwrap();
        assert_eq!(param("end_time=2026-11-29T10:00:00Z"), "start_time");
        assert_eq!(param("start_time=2026-11-29T10:00:00Z"), "end_time");
        assert_eq!(param(&format!("{window}&points=0")), "points");
        assert_eq!(param(&format!("{window}&points=2001")), "points");
        assert_eq!(param(&format!("{window}&points=1&points=2")), "points");
        assert_eq!(param(&format!("{window}&metric=")), "metric");
    }

    /// Goal: the longest query the OpenAPI document allows fits the query-string bound,
    /// so the bound never refuses a schema-valid query. Method: every parameter at its
    /// longest (128 metrics of 128 four-byte characters), percent-encoded as a client
    /// sends it, parsed.
    #[test]
    fn the_longest_valid_query_fits() {
        use crate::collector::timestamp::API_TIME_BYTES_MAX;
        let time = format!("2026-11-29T09:00:00.{}+01:00", "1".repeat(API_TIME_BYTES_MAX - 26));
        assert_eq!(time.len(), API_TIME_BYTES_MAX);
        let metric = "\u{10FFFD}".repeat(METRIC_PARAM_CHARS_MAX);
        let cursor = format!("{}{}", "0".repeat(40), "41".repeat(128));
        let mut pairs = vec![
            ("start_time", time.clone()),
            ("end_time", time),
            ("limit", "100000".to_string()),
            ("order", "desc".to_string()),
            ("cursor", cursor),
        ];
        pairs.extend((0..METRIC_PARAMS_MAX).map(|_| ("metric", metric.clone())));
        let raw = serde_urlencoded::to_string(&pairs).unwrap();
        assert!(raw.len() <= QUERY_BYTES_MAX, "{} bytes", raw.len());
        let q = parse_telemetry_query(Some(&raw)).unwrap();
        assert_eq!(q.metrics.len(), METRIC_PARAMS_MAX);
        assert_eq!(param_of(&format!("{raw}&metric=one-too-many")), "metric");
    }

    #[test]
    fn traversal_ids_are_refused() {
        for id in ["../x", "..", "/etc/passwd", "a\0b", "%2e%2e%2f", "a/b", ""] {
            assert!(check_gpu_id(id).is_err(), "{id:?}");
        }
        check_gpu_id("GPU-5fd4f087-86f3-7a43-b711-4771313afc50").unwrap();
    }
}
