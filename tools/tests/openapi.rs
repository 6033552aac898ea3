//! `spec/openapi.json` is the OpenAPI document generated from the collector's handlers.
//! This test fails when the file is stale; `UPDATE_OPENAPI=1 cargo test -p mq-tools --test
//! openapi` rewrites it.

use std::path::Path;

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
