//! `spec/openapi.json` is the OpenAPI document generated from the collector's handlers.
//! This test fails when the file is stale; `UPDATE_OPENAPI=1 cargo test -p mq-tools --test
//! openapi` rewrites it. It also checks that the document states the constraints the code
//! checks with (patterns, lengths, ranges, enums), taken from the same constants.

use std::path::Path;

use serde_json::{json, Value};

#[test]
fn spec_openapi_json_matches_the_code() {
    let generated = mq_tools::collector::http::openapi_json();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "spec/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p mq-tools --test openapi`"
    );
    let doc: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/health",
        "/api/v1/gpus",
        "/api/v1/gpus/{gpu_id}/telemetry",
        "/api/v1/gpus/{gpu_id}/series",
        "/api/v1/overview",
        "/api/v1/pipeline",
        "/stats",
        "/metrics",
    ] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} documented");
    }
}

/// The generated document (the test above checks the committed file is the same).
fn generated() -> Value {
    serde_json::from_str(&mq_tools::collector::http::openapi_json()).unwrap()
}

/// The schema of query or path parameter `name` of `GET path`, `$ref`s followed.
fn param_schema(doc: &Value, path: &str, name: &str) -> Value {
    let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
    let param = params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"));
    resolve(doc, &param["schema"])
}

fn resolve(doc: &Value, schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(inner) = schema["oneOf"].as_array().filter(|a| a.len() == 1) {
        schema = inner[0].clone();
    }
    match schema["$ref"].as_str() {
        Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
        None => schema,
    }
}

/// Goal: the document's parameter constraints are the code's. Method: read each from
/// the document and compare with the constants the validation uses.
#[test]
fn parameter_constraints_are_the_codes() {
    use mq_tools::api::params::{
        GPU_ID_PATTERN, METRIC_PARAMS_MAX, METRIC_PARAM_CHARS_MAX, METRIC_PATTERN,
    };
    use mq_tools::collector::query::{CURSOR_PATTERN, LIMIT_MAX};
    use mq_tools::collector::series::POINTS_MAX;
    use mq_tools::collector::timestamp::API_TIME_BYTES_MAX;
    let doc = generated();
    let telemetry = "/api/v1/gpus/{gpu_id}/telemetry";
    let series = "/api/v1/gpus/{gpu_id}/series";
    for path in [telemetry, series] {
        let id = param_schema(&doc, path, "gpu_id");
        assert_eq!(
            (id["pattern"].as_str(), id["maxLength"].as_u64()),
            (Some(GPU_ID_PATTERN), Some(128))
        );
        for time in ["start_time", "end_time"] {
            let t = param_schema(&doc, path, time);
            assert_eq!(t["format"], "date-time", "{path} {time}");
            assert_eq!(t["maxLength"], API_TIME_BYTES_MAX, "{path} {time}");
        }
        let metric = param_schema(&doc, path, "metric");
        assert_eq!(metric["maxItems"], METRIC_PARAMS_MAX);
        let item = resolve(&doc, &metric["items"]);
        assert_eq!(item["pattern"], METRIC_PATTERN);
        assert_eq!(
            (item["minLength"].as_u64(), item["maxLength"].as_u64()),
            (Some(1), Some(METRIC_PARAM_CHARS_MAX as u64))
        );
    }
    let limit = param_schema(&doc, telemetry, "limit");
    assert_eq!((limit["minimum"].clone(), limit["maximum"].clone()), (json!(1), json!(LIMIT_MAX)));
    assert_eq!(param_schema(&doc, series, "points")["maximum"], POINTS_MAX);
    assert_eq!(param_schema(&doc, telemetry, "order")["enum"], json!(["asc", "desc"]));
    assert_eq!(param_schema(&doc, telemetry, "cursor")["pattern"], CURSOR_PATTERN);
    let required: Vec<&str> = doc["paths"][series]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(required, ["gpu_id", "start_time", "end_time"]);
}
