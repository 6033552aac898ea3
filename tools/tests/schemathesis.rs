//! The API contract, checked by a real peer: schemathesis (4.x, `--checks all`) generates
//! requests from `/openapi.json` (valid ones, which must be accepted, and invalid ones,
//! which must be refused with a 4xx) and checks every answer against the document, on a
//! live collector and on a live gateway over two collectors.
//!
//! schemathesis is a Python program: the test runs `$SCHEMATHESIS` (`.ci/run` installs it
//! in a virtual environment and sets it), else `schemathesis` on the `PATH`, and skips
//! with a message when there is none. `SCHEMATHESIS_MAX_EXAMPLES` (default 50, about half a
//! minute in all on two cores) and `SCHEMATHESIS_SEED` (default 1) size and vary a run:
//! `SCHEMATHESIS_MAX_EXAMPLES=1000` is the long run.
//!
//! `schemathesis_hooks.py` (next to this file) teaches schemathesis the one rule JSON
//! Schema cannot state, `start_time` not after `end_time`: it drops exactly the
//! documented 400 for a request whose times are in the wrong order, nothing else.

mod collector_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use collector_support::*;

/// GPUs both collectors hold (the same records on both topics), and one each of its own.
const SHARED: [&str; 2] = ["GPU-5fd4f087-86f3-7a43-b711-4771313afc50", "node-7:3"];
const ONLY_A: &str = "GPU-only-a";
const ONLY_B: &str = "GPU-only-b";

/// The schemathesis to run, if one runs.
fn schemathesis() -> Option<PathBuf> {
    let exe = std::env::var_os("SCHEMATHESIS").map_or_else(|| "schemathesis".into(), PathBuf::from);
    let version = Command::new(&exe).arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {
            println!("using {}: {}", exe.display(), String::from_utf8_lossy(&out.stdout).trim());
            Some(exe)
        }
        _ => {
            println!(
                "SKIPPED: schemathesis not found (tried {}); `.ci/run` installs it, or \
                 `python3 -m venv V && V/bin/pip install schemathesis` and SCHEMATHESIS=V/bin/schemathesis",
                exe.display()
            );
            None
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rows(gpu: &str, first: i64, count: i64) -> Vec<(String, String)> {
    (first..first + count)
        .map(|k| {
            let metrics = [
                ("DCGM_FI_DEV_GPU_UTIL", (k % 100) as f64),
                ("DCGM_FI_DEV_GPU_TEMP", 40.0 + (k % 30) as f64),
                ("DCGM_FI_DEV_POWER_USAGE", 300.0 + k as f64 / 4.0),
            ];
            (gpu.to_string(), record(gpu, base_ms() + k * 250, &metrics))
        })
        .collect()
}

/// Runs schemathesis against `server`; panics with its whole output unless it passes.
fn check(exe: &Path, what: &str, server: &Server, work: &Path) {
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis_hooks.py");
    let (examples, seed) =
        (env_or("SCHEMATHESIS_MAX_EXAMPLES", 50), env_or("SCHEMATHESIS_SEED", 1));
    let url = format!("http://{}/openapi.json", server.http);
    let args: Vec<String> = [
        "run",
        "--checks",
        "all",
        "--max-examples",
        &examples.to_string(),
        "--seed",
        &seed.to_string(),
        "--workers",
        "1",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--no-color",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("{what}: SCHEMATHESIS_HOOKS={} {} {}", hooks.display(), exe.display(), args.join(" "));
    let out = Command::new(exe)
        .args(&args)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .current_dir(work)
        .output()
        .expect("run schemathesis");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    println!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found failures on the {what}:\n{text}\n{}",
        server.log_text()
    );
}

/// Goal: a live collector and a live gateway keep the contract of `spec/openapi.json`
/// under every schemathesis check, and both serve that document. Method: a broker, two
/// collectors holding some of the same GPUs, a gateway over both; schemathesis against
/// each server's own `/openapi.json`.
#[test]
fn collector_and_gateway_keep_the_openapi_contract() {
    let Some(exe) = schemathesis() else { return };
    let broker = start_broker();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::collector(broker.addr, dir_a.path(), &["--topic", "ta", "--group", "ga"]);
    let b = Server::collector(broker.addr, dir_b.path(), &["--topic", "tb", "--group", "gb"]);
    for gpu in SHARED {
        publish(broker.addr, "ta", &rows(gpu, 0, 40));
        publish(broker.addr, "tb", &rows(gpu, 0, 40));
    }
    publish(broker.addr, "ta", &rows(ONLY_A, 0, 30));
    publish(broker.addr, "tb", &rows(ONLY_B, 20, 30));
    a.wait_stats("A stored", |s| s["records_stored"] == 110);
    b.wait_stats("B stored", |s| s["records_stored"] == 110);
    let gateway = Server::gateway(&[&a, &b]);
    gateway.wait_health(200);

    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/openapi.json");
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    assert_eq!(a.json("/openapi.json"), stored, "the collector serves spec/openapi.json");
    assert_eq!(gateway.json("/openapi.json"), stored, "the gateway describes the same API");

    let work = tempfile::tempdir().unwrap();
    check(&exe, "collector", &a, work.path());
    check(&exe, "gateway", &gateway, work.path());
}
