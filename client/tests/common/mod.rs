//! Shared helpers of the client's integration tests: an in-process broker on `127.0.0.1:0`
//! (memory storage), one that can be restarted on the same port, and client settings with
//! short timeouts so that failures show quickly.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_client::{BackoffConfig, ClientConfig};

/// A broker in a background thread with memory storage and the given tweaks.
pub fn start_broker(tweak: impl FnOnce(&mut Config)) -> Running {
    start_broker_at("127.0.0.1:0".parse().unwrap(), tweak)
}

/// A broker listening on `addr` (a fixed port, to restart a broker where it was).
pub fn start_broker_at(addr: SocketAddr, tweak: impl FnOnce(&mut Config)) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = Config::memory(addr);
    tweak(&mut config);
    Running::start(config).expect("broker starts")
}

/// Client settings for tests: reconnects every 10 to 100 ms for at most `give_up_after`.
pub fn client_config(give_up_after: Duration) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        backoff: BackoffConfig {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            attempts_max: None,
            elapsed_max: Some(give_up_after),
        },
        ..ClientConfig::default()
    }
}

/// An address nothing listens on (a port bound, then released).
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
