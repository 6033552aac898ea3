//! `/metrics`: the Prometheus text exposition format 0.0.4.
//!
//! Every metric of every GPU appears as a gauge named as the metric
//! (`DCGM_FI_DEV_GPU_UTIL`), with dcgm-exporter's identity labels (`gpu`, `UUID`,
//! `device`, `modelName`, `Hostname`) and the labels of the record that carried the latest
//! value. Names and label names outside Prometheus' alphabet have the offending characters
//! replaced by `_`. The collector's own counters follow, prefixed `collector_` (retention's
//! as `collector_retention_*`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::catalog::Latest;
use super::record::GpuIdentity;
use super::Shared;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The identity label names dcgm-exporter uses; record labels of the same name are left
/// out (the identity wins).
const IDENTITY_LABELS: [&str; 5] = ["gpu", "UUID", "device", "modelName", "Hostname"];

/// Record labels Prometheus attaches itself to every scraped series: exported, they come
/// back as `exported_instance` / `exported_job` on every series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Whether a (sanitised) record label name is one that must never be exported: a name
/// Prometheus reserves (`__` prefix: `__name__` copied from DCGM's `labels_raw` made
/// Prometheus 2.42 refuse the whole page, "label name \"__name__\" is not unique: invalid
/// sample", and `up` 0) or one it attaches itself ([`TARGET_LABELS`]).
pub fn is_reserved_label(name: &str) -> bool {
    name.starts_with("__") || TARGET_LABELS.contains(&name)
}

/// Renders the page.
pub fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(64 * 1024);
    {
        let catalog = shared.catalog.read().expect("catalog lock");
        let mut families: BTreeMap<String, Vec<(&str, &GpuIdentity, &Latest)>> = BTreeMap::new();
        for (uuid, gpu) in &catalog.gpus {
            for (metric, latest) in &gpu.latest {
                families.entry(metric_name(metric)).or_default().push((
                    uuid,
                    &gpu.identity,
                    latest,
                ));
            }
        }
        for (name, series) in &families {
            let _ = writeln!(out, "# HELP {name} Latest value of {name} per GPU.");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (uuid, identity, latest) in series {
                out.push_str(name);
                write_labels(&mut out, uuid, identity, latest);
                let _ = writeln!(out, " {}", latest.value);
            }
        }
    }
    render_own(shared, &mut out);
    out
}

fn write_labels(out: &mut String, uuid: &str, identity: &GpuIdentity, latest: &Latest) {
    let mut labels: Vec<(String, &str)> = Vec::new();
    let index = identity.gpu_index.map(|i| i.to_string());
    if let Some(i) = &index {
        labels.push(("gpu".into(), i));
    }
    labels.push(("UUID".into(), uuid));
    if let Some(d) = &identity.device {
        labels.push(("device".into(), d));
    }
    if let Some(m) = &identity.model {
        labels.push(("modelName".into(), m));
    }
    if let Some(h) = &identity.hostname {
        labels.push(("Hostname".into(), h));
    }
    if let Some(extra) = &latest.extra {
        for (k, v) in &extra.labels {
            let name = label_name(k);
            if !IDENTITY_LABELS.contains(&name.as_str())
                && !is_reserved_label(&name)
                && !labels.iter().any(|(n, _)| *n == name)
            {
                labels.push((name, v));
            }
        }
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

fn render_own(shared: &Shared, out: &mut String) {
    let s = &shared.stats;
    let counters = [
        (
            "collector_records_consumed_total",
            "Records received from the broker.",
            s.records_consumed.load(Relaxed),
        ),
        ("collector_records_stored_total", "Records stored.", s.records_stored.load(Relaxed)),
        (
            "collector_records_duplicate_total",
            "Records received again after being stored.",
            s.records_duplicate.load(Relaxed),
        ),
        (
            "collector_records_expired_total",
            "Records already past the retention on arrival; acknowledged, not stored.",
            s.records_expired.load(Relaxed),
        ),
        ("collector_samples_stored_total", "Samples stored.", s.samples_stored.load(Relaxed)),
        ("collector_batches_total", "Batches stored.", s.batches.load(Relaxed)),
        (
            "collector_batch_errors_total",
            "Batches that failed to store.",
            s.batch_errors.load(Relaxed),
        ),
        (
            "collector_cache_hits_total",
            "Telemetry queries answered from the cache.",
            s.cache_hits.load(Relaxed),
        ),
        (
            "collector_cache_misses_total",
            "Telemetry queries answered from files.",
            s.cache_misses.load(Relaxed),
        ),
        ("collector_retention_runs_total", "Retention runs.", s.retention_runs.load(Relaxed)),
        (
            "collector_retention_samples_removed_total",
            "Samples deleted by retention.",
            s.retention_samples_removed.load(Relaxed),
        ),
        (
            "collector_retention_bytes_removed_total",
            "Bytes deleted by retention.",
            s.retention_bytes_removed.load(Relaxed),
        ),
        (
            "collector_retention_files_removed_total",
            "Files deleted by retention.",
            s.retention_files_removed.load(Relaxed),
        ),
        (
            "collector_retention_gpus_removed_total",
            "GPUs retention left without samples.",
            s.retention_gpus_removed.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let name = "collector_records_bad_total";
    let _ = writeln!(out, "# HELP {name} Records sent to the dead-letter topic, by reason.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, n) in s.bad_counts() {
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", reason.name());
    }
    let cache = shared.cache.lock().expect("cache lock").stats();
    let gpus = shared.catalog.read().expect("catalog lock").gpus.len();
    let lag = s.lag.load(Relaxed);
    let mut gauges = vec![
        ("collector_gpus", "GPUs stored.", gpus as i64),
        ("collector_cache_gpus", "GPUs with samples in the cache.", cache.gpus as i64),
        ("collector_cache_samples", "Samples in the cache.", cache.samples as i64),
        (
            "collector_broker_up",
            "1 if the broker answered the last check.",
            i64::from(s.broker_up.load(Relaxed)),
        ),
        (
            "collector_consuming",
            "1 if the consumer is subscribed.",
            i64::from(s.consuming.load(Relaxed)),
        ),
    ];
    if lag >= 0 {
        gauges.push(("collector_consumer_lag", "Records not yet acknowledged by the group.", lag));
    }
    gauges.push((
        "collector_stored_bytes",
        "Bytes the JSONL files hold.",
        s.stored_bytes.load(Relaxed) as i64,
    ));
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let last_run_ms = s.retention_last_run_ms.load(Relaxed);
    let seconds = [
        (
            "collector_retention_last_run_timestamp_seconds",
            "When the last retention run ended (0: none yet).",
            last_run_ms as f64 / 1000.0,
        ),
        (
            "collector_retention_last_run_duration_seconds",
            "How long the last retention run took.",
            s.retention_last_run_us.load(Relaxed) as f64 / 1e6,
        ),
    ];
    for (name, help, value) in seconds {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
}

/// A metric name in Prometheus' alphabet `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// A label name in Prometheus' alphabet `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::collector::line::Sample;
    use crate::collector::record::SampleExtra;

    #[test]
    fn gpus_appear_as_dcgm_exporter_gauges() {
        let shared = Shared::new(std::path::Path::new("/nonexistent"), 10, 100);
        {
            let mut catalog = shared.catalog.write().unwrap();
            let gpu = catalog.gpus.entry(Arc::from("GPU-1")).or_default();
            gpu.identity = GpuIdentity {
                hostname: Some("h\"1".into()),
                gpu_index: Some(0),
                device: Some("nvidia0".into()),
                model: Some("H100".into()),
            };
            let extra = SampleExtra {
                labels: [
                    ("pci_bus_id".to_string(), "00:1E".to_string()),
                    ("UUID".into(), "x".into()),
                    ("__name__".into(), "DCGM_FI_DEV_GPU_UTIL".into()),
                    ("instance".into(), "node-1:9400".into()),
                    ("job".into(), "dcgm".into()),
                    ("_-x".into(), "sanitised into the reserved prefix".into()),
                ]
                .into(),
                ..Default::default()
            };
            gpu.note_latest(&Sample {
                ts_ms: 1,
                value: 97.5,
                offset: 0,
                partition: 0,
                metric: Arc::from("DCGM_FI_DEV_GPU_UTIL"),
                extra: Some(Arc::new(extra)),
            });
        }
        let text = render(&shared);
        assert!(text.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"), "{text}");
        assert!(text.contains(
            "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-1\",device=\"nvidia0\",modelName=\"H100\",\
             Hostname=\"h\\\"1\",pci_bus_id=\"00:1E\"} 97.5\n"
        ), "{text}");
        assert!(text.contains("collector_records_bad_total{reason=\"bad_json\"} 0\n"));
        for reserved in ["__name__=", "instance=", "job=", "__x="] {
            assert!(!text.contains(reserved), "{reserved} exported: {text}");
        }
        assert_eq!(metric_name("9 bad-name"), "_9_bad_name");
    }
}
