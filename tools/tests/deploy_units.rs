//! The systemd units in `deploy/systemd/` pass `systemd-analyze verify`. The units name
//! `/usr/local/bin/...`; the test points them at stand-in executables in a temp dir, since
//! verify checks that `ExecStart` exists. Where `systemd-analyze` is not installed the test
//! says so and checks only that every unit has the hardening keys.

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 4] = [
    "mqd.service",
    "telemetry-collector.service",
    "telemetry-gateway.service",
    "telemetry-streamer@.service",
];

fn unit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

#[test]
fn every_unit_is_hardened_and_restarts_on_failure() {
    for unit in UNITS {
        let text = std::fs::read_to_string(unit_dir().join(unit)).unwrap();
        for key in [
            "User=mq",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
            "LimitNOFILE=",
            "KillSignal=SIGTERM",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        assert!(text.contains("--config /etc/mq/"), "{unit} reads its config file");
    }
}

#[test]
fn systemd_analyze_verify_passes_on_every_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: only the hardening keys were checked");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for exe in ["mqd", "telemetry-collector", "telemetry-gateway", "telemetry-streamer"] {
        let path = bin.join(exe);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut args = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(unit_dir().join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        let name = unit.replace("@.", "@check.");
        std::fs::write(tmp.path().join(unit), &text).unwrap();
        std::fs::write(tmp.path().join(&name), &text).unwrap();
        if !unit.contains("@.") {
            args.push(tmp.path().join(unit));
        } else {
            args.push(tmp.path().join(name));
        }
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

/// The example configs in `deploy/config/` are accepted by their binaries (every key is a
/// flag): each starts and serves, with only the addresses and directories overridden.
#[test]
fn the_example_configs_are_accepted_by_their_binaries() {
    use std::io::{BufRead, BufReader};
    let config =
        |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("collector");
    let cases: [(&str, Vec<String>); 2] = [
        (
            env!("CARGO_BIN_EXE_telemetry-gateway"),
            vec![
                "--config".into(),
                config("gateway.toml").display().to_string(),
                "--http".into(),
                "127.0.0.1:0".into(),
            ],
        ),
        (
            env!("CARGO_BIN_EXE_telemetry-collector"),
            vec![
                "--config".into(),
                config("collector.toml").display().to_string(),
                "--http".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--addr".into(),
                "127.0.0.1:1".into(),
            ],
        ),
    ];
    for (exe, args) in cases {
        let mut child = Command::new(exe)
            .args(&args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let serving = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(50)
            .any(|l| l.contains("http listening on"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(serving, "{exe} did not start with its example config");
    }
}
