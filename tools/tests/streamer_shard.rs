//! `--shard I/N` splits a file by GPU: run as `--dry-run` over the same file, N instances
//! together print every record of the unsharded run exactly once, each GPU's records come
//! from one instance only, in file order, and skipped rows are counted by exactly one
//! instance. Checked on generated long (several metrics per GPU per time) and wide files,
//! with host:index ids, rows without an id and ragged rows, and on the real DCGM export when
//! `../shared/data/` is there (`spec/telemetry.md`, "Sharding").

mod streamer_support;

use std::collections::BTreeMap;
use std::path::Path;

use streamer_support::*;

/// A GPU's records (without `timestamp`) in the order an instance printed them.
type ByGpu = BTreeMap<String, Vec<serde_json::Value>>;

/// The dry-run records of `file` in shard `shard`, by GPU, and the summary's skipped rows.
fn dry_run(file: &Path, shard: &str) -> (ByGpu, u64, u64) {
    let out = run_streamer(&[
        "--file",
        file.to_str().unwrap(),
        "--dry-run",
        "--progress",
        "0",
        "--shard",
        shard,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut by_gpu = ByGpu::new();
    let lines = parse_lines(&out.stdout);
    let records = lines.len() as u64;
    for record in lines {
        let uuid = record["uuid"].as_str().expect("a uuid").to_string();
        by_gpu.entry(uuid).or_default().push(record);
    }
    let skipped = summary_count(&stderr, "skipped rows");
    assert_eq!(summary_count(&stderr, "rows read"), records + skipped, "{stderr}");
    (by_gpu, records, skipped)
}

/// Checks that `n` shards of `file` add up to the unsharded run, GPU by GPU; returns the
/// unsharded run's GPUs and skipped rows.
fn check_shards(file: &Path, n: u64) -> (Vec<String>, u64) {
    let (all, all_records, all_skipped) = dry_run(file, "0/1");
    assert!(all_records > 0, "the file has records");
    let mut owner: BTreeMap<String, u64> = BTreeMap::new();
    let (mut records, mut skipped) = (0, 0);
    for i in 0..n {
        let (part, part_records, part_skipped) = dry_run(file, &format!("{i}/{n}"));
        records += part_records;
        skipped += part_skipped;
        for (uuid, rows) in part {
            if let Some(other) = owner.insert(uuid.clone(), i) {
                panic!("GPU {uuid} has rows in shards {other} and {i} of {n}");
            }
            // Every record of the GPU, in file order, exactly once.
            assert_eq!(rows, all[&uuid], "{uuid} in shard {i}/{n}");
            let expected = mq_client::protocol::hash::fnv1a_32(uuid.as_bytes()) as u64 % n;
            assert_eq!(i, expected, "{uuid}: shard = fnv1a_32(uuid) mod {n}");
        }
    }
    assert_eq!(owner.len(), all.len(), "every GPU is in some shard");
    assert_eq!(records, all_records, "every record exactly once");
    assert_eq!(skipped, all_skipped, "every skipped row counted once");
    (all.into_keys().collect(), all_skipped)
}

/// A long-layout file: `ticks` times × `gpus` GPUs × 3 metrics, every third GPU known by
/// host and index only; plus a row with no id, a ragged row and a row with a bad value.
fn long_csv(dir: &Path, ticks: u32, gpus: u32) -> std::path::PathBuf {
    let mut text = String::from("timestamp,metric_name,gpu_id,uuid,Hostname,value,labels_raw\n");
    for t in 0..ticks {
        for g in 0..gpus {
            for (m, metric) in
                ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"]
                    .iter()
                    .enumerate()
            {
                let uuid = if g % 3 == 2 { String::new() } else { format!("GPU-long-{g:03}") };
                let host = format!("node-{}", g / 8);
                let value = t * 10 + m as u32;
                text.push_str(&format!(
                    "\"2025-07-18T20:{:02}:{:02}Z\",{metric},{},{uuid},{host},{value},\"gpu=\"\"{}\"\"\"\n",
                    t / 60,
                    t % 60,
                    g % 8,
                    g % 8
                ));
            }
        }
        if t == 1 {
            text.push_str("\"2025-07-18T20:00:01Z\",DCGM_FI_DEV_GPU_UTIL,x,,node-9,1,\n"); // no id
            text.push_str("\"2025-07-18T20:00:01Z\",DCGM_FI_DEV_GPU_UTIL,0\n"); // ragged
            text.push_str("\"2025-07-18T20:00:01Z\",DCGM_FI_DEV_GPU_UTIL,0,GPU-long-000,n,NaN,\n");
        }
    }
    write_file(dir, "long.csv", text.as_bytes())
}

/// A wide (nvidia-smi) file: `ticks` times × `gpus` GPUs, one row each.
fn wide_csv(dir: &Path, ticks: u32, gpus: u32) -> std::path::PathBuf {
    let mut text = String::from(
        "timestamp, name, index, uuid, utilization.gpu [%], temperature.gpu, power.draw [W]\n",
    );
    for t in 0..ticks {
        for g in 0..gpus {
            text.push_str(&format!(
                "2025/07/18 13:42:{:02}.000, NVIDIA H100 80GB HBM3, {}, GPU-wide-{g:03}, {} %, {}, {}.00 W\n",
                t % 60,
                g % 8,
                (t + g) % 100,
                30 + t % 50,
                100 + t
            ));
        }
    }
    write_file(dir, "wide.csv", text.as_bytes())
}

#[test]
fn shards_of_a_long_file_keep_each_gpu_in_one_shard_in_file_order() {
    let dir = temp_dir();
    let csv = long_csv(dir.path(), 20, 30);
    let (gpus, skipped) = check_shards(&csv, 2);
    assert_eq!(gpus.len(), 30);
    assert_eq!(gpus.iter().filter(|g| g.contains(':')).count(), 10, "host:index ids: {gpus:?}");
    assert_eq!(skipped, 3, "no id, ragged, NaN");
    check_shards(&csv, 3);
}

#[test]
fn shards_of_a_wide_file_keep_each_gpu_in_one_shard_in_file_order() {
    let dir = temp_dir();
    let csv = wide_csv(dir.path(), 25, 40);
    check_shards(&csv, 2);
    check_shards(&csv, 3);
}

#[test]
fn shards_of_the_real_dcgm_export_keep_each_gpu_in_one_shard_in_file_order() {
    let Some(csv) = real_dcgm_file() else { return };
    check_shards(&csv, 2);
    check_shards(&csv, 3);
}
