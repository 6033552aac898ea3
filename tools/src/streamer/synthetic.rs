//! Generated DCGM-shaped telemetry, so the stack runs without an input file: `H` hosts
//! (`gpu-node-001`, ...) with `G` GPUs each (`NVIDIA H100 80GB HBM3`), one record per GPU
//! and metric per tick, as in the long DCGM layout, so a rate limit controls the load
//! exactly.
//!
//! Each GPU has a *load* that follows a smooth random walk; utilisation, power, temperature
//! and clocks follow the load, memory use walks on its own. UUIDs are derived from host
//! name and index, so the same flags give the same GPUs on every run and machine.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::telemetry::TelemetryRecord;

use super::convert::{Prepared, TIMESTAMP_PLACEHOLDER};
use super::source::{Item, SourceError};
use super::{Shard, Source};

/// The GPU model every generated GPU has.
pub const MODEL: &str = "NVIDIA H100 80GB HBM3";
/// Frame buffer size of that model, MiB.
const FB_TOTAL_MIB: f64 = 81559.0;
/// The driver version in the labels.
const DRIVER_VERSION: &str = "535.129.03";

/// The metrics of one tick, in the order they are emitted.
pub const METRICS: [&str; 11] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
];

/// One generated GPU and its walks.
#[derive(Debug, Clone)]
struct Gpu {
    host: String,
    index: u32,
    uuid: String,
    /// Work load in [0, 1].
    load: f64,
    /// Memory in use, MiB.
    fb_used: f64,
}

/// The generator: an endless [`Source`].
#[derive(Debug)]
pub struct Synthetic {
    gpus: Vec<Gpu>,
    rng: fastrand::Rng,
    next_gpu: usize,
    next_metric: usize,
    line: u64,
    tick_time: String,
}

impl Synthetic {
    /// `hosts` × `gpus_per_host` GPUs, of which this instance generates those of `shard`
    /// (by GPU number, host-major). `seed` fixes the walks.
    pub fn new(hosts: u32, gpus_per_host: u32, shard: Shard, seed: u64) -> Synthetic {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut gpus = Vec::new();
        for h in 1..=hosts {
            for index in 0..gpus_per_host {
                let number = u64::from(h - 1) * u64::from(gpus_per_host) + u64::from(index);
                if !shard.owns(number) {
                    continue;
                }
                let host = format!("gpu-node-{h:03}");
                let uuid = uuid_for(&host, index);
                let load = rng.f64();
                let fb_used = 1024.0 + rng.f64() * 60000.0;
                gpus.push(Gpu { host, index, uuid, load, fb_used });
            }
        }
        Synthetic { gpus, rng, next_gpu: 0, next_metric: 0, line: 0, tick_time: String::new() }
    }

    /// GPUs this instance generates.
    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    fn record(&self, gpu: &Gpu, metric: usize) -> TelemetryRecord {
        let name = METRICS[metric];
        let labels = BTreeMap::from([
            ("DCGM_FI_DRIVER_VERSION".to_string(), DRIVER_VERSION.to_string()),
            ("Hostname".to_string(), gpu.host.clone()),
            ("UUID".to_string(), gpu.uuid.clone()),
            ("__name__".to_string(), name.to_string()),
            ("device".to_string(), format!("nvidia{}", gpu.index)),
            ("gpu".to_string(), gpu.index.to_string()),
            ("instance".to_string(), format!("{}:9400", gpu.host)),
            ("job".to_string(), "dcgm_exporter".to_string()),
            ("modelName".to_string(), MODEL.to_string()),
        ]);
        TelemetryRecord {
            timestamp: TIMESTAMP_PLACEHOLDER.to_string(),
            source_timestamp: Some(self.tick_time.clone()),
            uuid: gpu.uuid.clone(),
            hostname: Some(gpu.host.clone()),
            gpu_index: Some(gpu.index),
            device: Some(format!("nvidia{}", gpu.index)),
            model: Some(MODEL.to_string()),
            metrics: BTreeMap::from([(name.to_string(), value_of(gpu, metric))]),
            labels,
            attributes: BTreeMap::new(),
        }
    }

    /// Moves every walk one step and stamps the new tick.
    fn step(&mut self) {
        for gpu in &mut self.gpus {
            let pull = (0.6 - gpu.load) * 0.02; // drift back towards a busy GPU
            gpu.load = (gpu.load + pull + (self.rng.f64() - 0.5) * 0.1).clamp(0.0, 1.0);
            let mem_step = (self.rng.f64() - 0.5) * 2000.0;
            gpu.fb_used = (gpu.fb_used + mem_step).clamp(512.0, FB_TOTAL_MIB - 512.0);
        }
        let secs = jiff::Timestamp::now().as_second();
        self.tick_time =
            jiff::Timestamp::from_second(secs).map_or_else(|_| String::new(), |t| t.to_string());
    }
}

/// The value of `metric` (an index into [`METRICS`]) for a GPU in its current state.
fn value_of(gpu: &Gpu, metric: usize) -> f64 {
    let load = gpu.load;
    let round = |v: f64| v.round();
    match metric {
        0 => round(load * 100.0),
        1 => round(load * 70.0),
        2 | 3 => 0.0,
        4 => round(30.0 + load * 45.0),
        5 => round(35.0 + load * 50.0),
        6 => ((70.0 + load * 600.0) * 1000.0).round() / 1000.0,
        7 => round(gpu.fb_used),
        8 => round(FB_TOTAL_MIB - gpu.fb_used),
        9 => round(210.0 + load * 1770.0),
        _ => 2619.0,
    }
}

impl Source for Synthetic {
    /// The next record; never ends (a generator with no GPUs ends at once).
    fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        if self.gpus.is_empty() {
            return Ok(None);
        }
        if self.next_gpu == 0 && self.next_metric == 0 {
            self.step();
        }
        let record = self.record(&self.gpus[self.next_gpu], self.next_metric);
        self.line += 1;
        self.next_metric += 1;
        if self.next_metric == METRICS.len() {
            self.next_metric = 0;
            self.next_gpu = (self.next_gpu + 1) % self.gpus.len();
        }
        let prepared = Arc::new(Prepared::new(&record));
        Ok(Some(Item::Record { line: self.line, prepared, labels_malformed: false }))
    }
}

/// A stable GPU UUID for a host and index: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from
/// a hash of `<host>:<index>`.
pub fn uuid_for(host: &str, index: u32) -> String {
    let name = format!("{host}:{index}");
    let a = splitmix64(fnv1a_64(name.as_bytes()));
    let b = splitmix64(a ^ 0x9e37_79b9_7f4a_7c15);
    let hex = format!("{a:016x}{b:016x}");
    format!("GPU-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::valid_gpu_id;

    fn records(source: &mut Synthetic, n: usize) -> Vec<TelemetryRecord> {
        (0..n)
            .map(|_| match source.next_item().unwrap().unwrap() {
                Item::Record { prepared, .. } => {
                    let mut out = Vec::new();
                    prepared.write(b"2026-01-01T00:00:00.000Z", &mut out);
                    serde_json::from_slice(&out).unwrap()
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn uuids_are_stable_valid_and_distinct() {
        let a = uuid_for("gpu-node-001", 0);
        assert_eq!(a, uuid_for("gpu-node-001", 0));
        assert_ne!(a, uuid_for("gpu-node-001", 1));
        assert_ne!(a, uuid_for("gpu-node-002", 0));
        assert!(valid_gpu_id(&a) && a.len() == 40, "{a}");
    }

    #[test]
    fn one_tick_is_every_metric_of_every_gpu_with_plausible_values() {
        let mut s = Synthetic::new(2, 4, Shard::ALL, 1);
        assert_eq!(s.gpu_count(), 8);
        let tick = records(&mut s, 8 * METRICS.len());
        let gpus: std::collections::BTreeSet<&str> = tick.iter().map(|r| r.uuid.as_str()).collect();
        assert_eq!(gpus.len(), 8);
        for r in &tick {
            let (name, &v) = r.metrics.iter().next().unwrap();
            let ok = match name.as_str() {
                "DCGM_FI_DEV_GPU_UTIL" | "DCGM_FI_DEV_MEM_COPY_UTIL" => (0.0..=100.0).contains(&v),
                "DCGM_FI_DEV_GPU_TEMP" | "DCGM_FI_DEV_MEMORY_TEMP" => (25.0..=95.0).contains(&v),
                "DCGM_FI_DEV_POWER_USAGE" => (60.0..=700.0).contains(&v),
                "DCGM_FI_DEV_FB_USED" | "DCGM_FI_DEV_FB_FREE" => (0.0..=FB_TOTAL_MIB).contains(&v),
                _ => v >= 0.0,
            };
            assert!(ok, "{name} = {v}");
            assert_eq!(r.model.as_deref(), Some(MODEL));
            assert!(r.source_timestamp.as_deref().unwrap().ends_with('Z'));
        }
        assert_eq!(tick[0].hostname.as_deref(), Some("gpu-node-001"));
    }

    #[test]
    fn shards_split_the_gpus_without_overlap() {
        let all: Vec<usize> =
            (0..3).map(|i| Synthetic::new(3, 5, Shard::new(i, 3), 0).gpu_count()).collect();
        assert_eq!(all, [5, 5, 5]);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..3 {
            for g in Synthetic::new(3, 5, Shard::new(i, 3), 0).gpus {
                assert!(seen.insert(g.uuid));
            }
        }
    }
}
