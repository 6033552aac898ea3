//! `mqd`: parse flags, load the config file, bind, run until SIGINT/SIGTERM, exit 0.

use clap::Parser;

/// mimalloc keeps freed pages for reuse. With the system allocator, read buffers that payloads
/// keep alive (zero-copy) are fresh memory on every read, and half the broker's time went to
/// page faults zeroing it (`perf`, see `BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mq_broker::config::Args;
use mq_broker::event_loop::Broker;

fn main() {
    // No transparent huge pages: faulting in a 2 MiB page stalled the single event-loop thread
    // for milliseconds, which was the whole p99 tail at a steady 10,000 records/s (p99 1.04 ms
    // with, 0.22 ms without) and cost a third of the throughput (BENCHMARKS.md, side by side).
    // Applies to the whole process, mappings made before this call included.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Args::parse().load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mqd: {e}");
            std::process::exit(2);
        }
    };
    let mut broker = match Broker::bind(config.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mqd: cannot start on {}: {e}", config.listen);
            std::process::exit(1);
        }
    };
    if let Err(e) = broker.handle_signals() {
        eprintln!("mqd: cannot install signal handlers: {e}");
        std::process::exit(1);
    }
    if let Err(e) = broker.run() {
        eprintln!("mqd: {e}");
        std::process::exit(1);
    }
}
