//! `telemetry-gateway`: the telemetry API over several collectors. See
//! `mq_tools::gateway`.
//!
//! Every flag can also be set in a TOML file given with `--config`, under the flag's name
//! with `_` for `-` (`collector = ["http://127.0.0.1:8081", ...]`); flags win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mq_tools::gateway::{self, GatewayConfig};
use serde::Deserialize;

/// Serve the telemetry API over several collectors.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(version, after_help = mq_tools::api::HELP_API)]
#[serde(deny_unknown_fields)]
struct Args {
    /// TOML file with defaults for these flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port, logged as "http listening on"
    /// [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// A collector's base URL (`http://127.0.0.1:8081`); repeat for each collector.
    #[arg(long = "collector")]
    #[serde(default)]
    collector: Vec<String>,
    /// Bearer token this gateway requires on every path but /health.
    #[arg(long, env = "GATEWAY_HTTP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
    /// Bearer token to send to the collectors.
    #[arg(long, env = "COLLECTOR_HTTP_TOKEN", hide_env_values = true)]
    collector_token: Option<String>,
}

fn load(args: Args) -> Result<GatewayConfig, String> {
    let file: Args = mq_tools::read_config(args.config.as_deref())?;
    let collectors = if args.collector.is_empty() { file.collector } else { args.collector };
    if collectors.is_empty() {
        return Err("name at least one --collector URL".into());
    }
    Ok(GatewayConfig {
        http: args.http.or(file.http).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
        collectors,
        http_token: args.http_token.or(file.http_token),
        collector_token: args.collector_token.or(file.collector_token),
    })
}

fn main() -> ExitCode {
    mq_tools::service_main("telemetry-gateway", || load(Args::parse()), gateway::run)
}
