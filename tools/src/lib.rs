//! Shared code of the command-line tools (`mqctl`, `mq-bench`, and the telemetry tools):
//! broker address lists, plain-text tables, and human-readable numbers.
#![deny(missing_docs, missing_debug_implementations)]

pub mod api;
pub mod collector;
pub mod dashboard;
pub mod gateway;
pub mod streamer;
pub mod table;
pub mod telemetry;

/// The command line with the settings of `--config FILE` (TOML) put first, so that flags
/// given on the command line win: `key = value` becomes `--key value` (`_` read as `-`),
/// `key = true` becomes `--key`, `key = false` is left out, and an array repeats the flag
/// once per element. Every tool reads its config file this way, so a config key is always
/// exactly a flag.
///
/// # Errors
/// An unreadable or invalid file, or a value that is not a flag value (a table).
pub fn args_with_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let mut path = None;
    for (i, arg) in args.iter().enumerate() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            path = args.get(i + 1).map(std::path::PathBuf::from);
        } else if let Some(p) = text.strip_prefix("--config=") {
            path = Some(std::path::PathBuf::from(p));
        }
    }
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let mut out = vec![args[0].clone()];
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => out.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => out.extend([flag.clone().into(), s.into()]),
                toml::Value::Integer(i) => out.extend([flag.clone().into(), i.to_string().into()]),
                toml::Value::Float(f) => out.extend([flag.clone().into(), f.to_string().into()]),
                other => {
                    return Err(format!(
                        "--config {}: {key} = {other} is not a flag value",
                        path.display()
                    ))
                }
            }
        }
    }
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

/// The settings of a `--config` TOML file read into the flags' own type (`T::default()`
/// without a file), for tools that merge file and command line field by field.
///
/// # Errors
/// An unreadable file, or one that does not fit `T` (unknown keys included, where `T`
/// denies them), as a message naming the file.
pub fn read_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> Result<T, String> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The broker address when neither `--addr` nor `MQ_ADDR` names one.
pub const ADDR_DEFAULT: &str = "127.0.0.1:7420";

/// Splits `--addr` text into broker addresses: `host:port`, comma-separated, tried in order.
pub fn split_addrs(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect()
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn human_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, rounded: `1,234/s`, or `-` when there is no rate (a single sample).
pub fn human_rate(per_s: Option<f64>) -> String {
    match per_s {
        Some(r) => format!("{}/s", human_count(r.max(0.0).round() as u64)),
        None => "-".to_string(),
    }
}

/// The `main` of a long-running service tool: logging from `RUST_LOG` (default `info`),
/// its settings from `load` (flags and config file), then `run` until it stops. Exit 2 for
/// what a restart cannot fix (a settings error, or a `PermissionDenied` failure such as a
/// refused auth token), exit 1 for any other failure while running, each printed to stderr
/// as `name: error` (also when logging is turned off); a clean stop is exit 0.
pub fn service_main<C>(
    name: &str,
    load: impl FnOnce() -> Result<C, String>,
    run: impl FnOnce(C) -> std::io::Result<()>,
) -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_become_flags_that_the_command_line_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool.toml");
        std::fs::write(
            &path,
            "addr = \"a:1\"\nloop = true\nquiet = false\nrate = 5\ncollector = [\"u1\", \"u2\"]\n",
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> =
            ["tool", "--config", path.to_str().unwrap(), "--rate", "7"]
                .iter()
                .map(Into::into)
                .collect();
        let out: Vec<String> = args_with_config(args)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let config = path.to_str().unwrap();
        assert_eq!(
            out,
            [
                "tool",
                "--addr",
                "a:1",
                "--collector",
                "u1",
                "--collector",
                "u2",
                "--loop",
                "--rate",
                "5",
                "--config",
                config,
                "--rate",
                "7"
            ]
        );
        std::fs::write(&path, "nested = { a = 1 }\n").unwrap();
        let args: Vec<std::ffi::OsString> =
            ["tool", "--config", config].iter().map(Into::into).collect();
        assert!(args_with_config(args).is_err());
    }

    #[test]
    fn addresses_split_on_commas() {
        assert_eq!(split_addrs("a:1, b:2,,"), ["a:1", "b:2"]);
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(human_count(0), "0");
        assert_eq!(human_count(1234567), "1,234,567");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(human_rate(Some(999.6)), "1,000/s");
        assert_eq!(human_rate(None), "-");
    }
}
