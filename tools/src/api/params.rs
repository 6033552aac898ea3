//! Validation of the telemetry query's parameters and of GPU ids in paths.
//!
//! Parameters are read from the raw query string (so `metric` can repeat, and a repeated
//! single-valued parameter is an error rather than silently one of its values). Unknown
//! parameters are ignored.

use super::ApiError;
use crate::collector::query::{decode_cursor, Query, LIMIT_DEFAULT, LIMIT_MAX};
use crate::collector::record::valid_metric_name;
use crate::collector::series::{SeriesQuery, POINTS_DEFAULT, POINTS_MAX};
use crate::collector::timestamp::{parse_rfc3339_ms, TS_MS_MAX, TS_MS_MIN};
use crate::telemetry::valid_gpu_id;

/// Longest query string accepted, in bytes.
pub const QUERY_BYTES_MAX: usize = 8192;
/// Most `metric` parameters in one query.
pub const METRIC_PARAMS_MAX: usize = 256;

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
        after: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &pairs {
        let once = ["start_time", "end_time", "limit", "cursor"];
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
            "cursor" => {
                let key = decode_cursor(value)
                    .ok_or_else(|| ApiError::bad("cursor", "not a cursor from a previous page"))?;
                query.after = Some(key);
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
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=POINTS_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "points",
                    format!("points must be an integer from 1 to {POINTS_MAX}"),
                ))
            }
        },
    };
    Ok(SeriesQuery { start_ms, end_ms, metrics, points })
}

fn required(param: &str) -> ApiError {
    ApiError::bad(param, format!("{param} is required"))
}

fn check_metric(value: &str, known: usize) -> Result<(), ApiError> {
    if !valid_metric_name(value) {
        return Err(ApiError::bad(
            "metric",
            "metric must be 1 to 128 characters, no control characters",
        ));
    }
    if known == METRIC_PARAMS_MAX {
        return Err(ApiError::bad("metric", format!("more than {METRIC_PARAMS_MAX} metrics")));
    }
    Ok(())
}

fn parse_time(param: &str, value: &str) -> Result<i64, ApiError> {
    parse_rfc3339_ms(value).map_err(|e| ApiError::bad(param, format!("{param}: {e}")))
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(ApiError::bad("limit", format!("limit must be an integer from 1 to {LIMIT_MAX}"))),
    }
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
        let q = parse_telemetry_query(None).unwrap();
        assert_eq!((q.start_ms, q.end_ms, q.limit), (TS_MS_MIN, TS_MS_MAX, LIMIT_DEFAULT));
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
        assert_eq!(param_of("cursor=xyz"), "cursor");
        assert_eq!(param_of("metric="), "metric");
        assert_eq!(param_of(&"a=b&".repeat(3000)), "query");
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

    #[test]
    fn traversal_ids_are_refused() {
        for id in ["../x", "..", "/etc/passwd", "a\0b", "%2e%2e%2f", "a/b", ""] {
            assert!(check_gpu_id(id).is_err(), "{id:?}");
        }
        check_gpu_id("GPU-5fd4f087-86f3-7a43-b711-4771313afc50").unwrap();
    }
}
