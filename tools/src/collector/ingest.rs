//! Ingest: the consumer thread, the parse workers and the storage writer thread.
//!
//! ```text
//! consumer thread: poll ─▶ parse (worker pool, in parallel) ─▶ reject bad records (DLQ)
//!        ▲                                  │ valid records, in order
//!        │ ack / reject / nack              ▼
//!        └──────────── verdicts ◀── writer thread: write, syncfs, checkpoint, publish;
//!                                    retention between batches
//! ```
//!
//! The consumer thread owns the broker connection (`mq_client::Consumer` is blocking and
//! not shared). It keeps up to [`BATCHES_IN_FLIGHT_MAX`] batches at the writer, so polling
//! and parsing the next batch overlap the sync of the previous one; the credit must cover
//! them. A record is acknowledged only after the writer reports it durable (or a
//! duplicate of a durable one); a bad record is rejected straight to the dead-letter topic
//! (no retry: it would fail the same way); a batch the writer could not store is NACKed
//! with a delay, to come again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mq_client::{
    Backoff, BackoffConfig, ClientConfig, ClientError, Consumer, ConsumerConfig, Message,
};

use super::record::{self, Bad, Parsed};
use super::store::{Store, Verdict};
use super::timestamp::now_ms;
use super::Shared;

/// Batches handed to the writer and not yet settled.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;
/// How long one poll waits, so a stop request is seen within about this time.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Longest wait for the final commit and leave at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Delay before a batch that failed to store comes again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Most warnings about bad records per second (the counters count them all).
const BAD_WARNINGS_PER_S: u32 = 10;

/// Settings of ingest.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Broker addresses.
    pub addrs: Vec<String>,
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Client settings (auth token, timeouts).
    pub client: ClientConfig,
    /// Records in flight to this collector.
    pub credit: u32,
    /// Most records per batch.
    pub batch_max: usize,
    /// Parse threads.
    pub workers: usize,
}

/// A batch at the writer.
struct Pending {
    messages: Vec<Message>,
    /// Per message: `None` if it went to the writer, else why it was refused.
    refused: Vec<Option<Bad>>,
}

/// Runs ingest until `stop` is set; then finishes the batches in flight, acknowledges
/// them, commits and leaves the group. Returns when all that is done.
///
/// # Errors
/// The broker refused the token ([`ClientError::is_auth_refused`]): no retry can help, so
/// ingest sets `stop` (the whole collector stops) and returns the refusal.
pub fn run(
    config: IngestConfig,
    store: Store,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<(), ClientError> {
    let (to_writer, batches) = mpsc::sync_channel::<Vec<Parsed>>(BATCHES_IN_FLIGHT_MAX);
    let (verdicts_tx, verdicts) = mpsc::channel();
    let writer = thread::Builder::new()
        .name("writer".into())
        .spawn(move || write_loop(store, batches, verdicts_tx))
        .expect("spawn the writer thread");
    let mut warnings = WarnLimiter::default();
    let mut refused = Ok(());
    while !stop.load(Relaxed) {
        let mut consumer = match subscribe(&config, &shared, &stop) {
            Ok(Some(consumer)) => consumer,
            Ok(None) => break,
            Err(e) => {
                stop.store(true, Relaxed);
                refused = Err(e);
                break;
            }
        };
        let mut pending = VecDeque::new();
        let result = consume(
            &config,
            &shared,
            &stop,
            &mut consumer,
            &to_writer,
            &verdicts,
            &mut pending,
            &mut warnings,
        );
        // Let the writer finish what it has. On a clean stop its records are acknowledged;
        // after a connection failure they are not (they come again, as duplicates).
        while !pending.is_empty() {
            let Ok(outcome) = verdicts.recv() else { break };
            let batch = pending.pop_front().expect("pending batch");
            if result.is_ok() {
                if let Err(e) = settle(&mut consumer, &shared, batch, outcome, &mut warnings) {
                    debug!("settling the last batches: {e}");
                }
            }
        }
        shared.stats.consuming.store(false, Relaxed);
        match result {
            Ok(()) => {
                close_within(consumer, &config.group, CLOSE_WAIT);
                break;
            }
            Err(e) => warn!("consumer failed: {e}; subscribing again"),
        }
    }
    drop(to_writer);
    if writer.join().is_err() {
        warn!("the writer thread panicked");
    }
    refused
}

/// Commits and leaves the group, giving up after `wait` (a broker that is gone would
/// otherwise hold the exit for the client's whole reconnect policy). Giving up loses
/// nothing: what was stored and not acknowledged comes again and is skipped as a duplicate.
fn close_within(consumer: Consumer, group: &str, wait: Duration) {
    let (done_tx, done) = mpsc::channel();
    let closing = thread::Builder::new().name("close".into()).spawn(move || {
        let _ = done_tx.send(consumer.close());
    });
    match done.recv_timeout(wait) {
        Ok(Ok(())) => info!("consumer closed: acks committed, left group {group}"),
        Ok(Err(e)) => warn!("closing the consumer: {e}"),
        Err(_) => warn!("the broker did not answer the close within {} s; exiting", wait.as_secs()),
    }
    drop(closing);
}

/// Subscribes, retrying with backoff while the broker is unreachable, until `stop`
/// (`Ok(None)`); a refused token is returned at once, as no retry can help.
fn subscribe(
    config: &IngestConfig,
    shared: &Shared,
    stop: &AtomicBool,
) -> Result<Option<Consumer>, ClientError> {
    let consumer_config = ConsumerConfig { credit: config.credit, ..ConsumerConfig::default() };
    let policy =
        BackoffConfig { attempts_max: None, elapsed_max: None, ..BackoffConfig::default() };
    let mut backoff = Backoff::new(policy);
    while !stop.load(Relaxed) {
        let addrs = &config.addrs;
        match Consumer::subscribe(
            addrs,
            &config.topic,
            &config.group,
            config.client.clone(),
            consumer_config.clone(),
        ) {
            Ok(consumer) => {
                info!(
                    "consuming {} as group {} from {}",
                    config.topic,
                    config.group,
                    addrs.join(",")
                );
                shared.stats.consuming.store(true, Relaxed);
                return Ok(Some(consumer));
            }
            Err(e) if e.is_auth_refused() => {
                error!("the broker at {} refused the auth token ({e}); stopping", addrs.join(","));
                return Err(e);
            }
            Err(e) => {
                let wait = backoff.fail(Instant::now()).unwrap_or(Duration::from_secs(2));
                warn!("cannot subscribe ({e}); again in {} ms", wait.as_millis());
                sleep_unless(stop, wait);
            }
        }
    }
    Ok(None)
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Relaxed) && Instant::now() < until {
        thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

type Outcome = std::io::Result<Vec<Verdict>>;

#[allow(clippy::too_many_arguments)]
fn consume(
    config: &IngestConfig,
    shared: &Shared,
    stop: &AtomicBool,
    consumer: &mut Consumer,
    to_writer: &SyncSender<Vec<Parsed>>,
    verdicts: &Receiver<Outcome>,
    pending: &mut VecDeque<Pending>,
    warnings: &mut WarnLimiter,
) -> Result<(), ClientError> {
    while !stop.load(Relaxed) {
        while let Ok(outcome) = verdicts.try_recv() {
            settle(
                consumer,
                shared,
                pending.pop_front().expect("pending batch"),
                outcome,
                warnings,
            )?;
        }
        if pending.len() >= BATCHES_IN_FLIGHT_MAX {
            match verdicts.recv_timeout(POLL_WAIT) {
                Ok(outcome) => settle(
                    consumer,
                    shared,
                    pending.pop_front().expect("pending batch"),
                    outcome,
                    warnings,
                )?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("the writer thread is gone"),
            }
            continue;
        }
        let messages = poll_batch(consumer, config.batch_max)?;
        shared.stats.last_poll_ms.store(now_ms(), Relaxed);
        if messages.is_empty() {
            continue;
        }
        shared.stats.records_consumed.fetch_add(messages.len() as u64, Relaxed);
        let parsed = parse_all(&messages, config.workers);
        let mut valid = Vec::with_capacity(parsed.len());
        let mut refused = Vec::with_capacity(parsed.len());
        for (message, result) in messages.iter().zip(parsed) {
            match result {
                Ok(p) => {
                    valid.push(p);
                    refused.push(None);
                }
                Err(bad) => {
                    shared.stats.count_bad(bad.reason);
                    warnings.warn(message, &bad);
                    consumer.reject(message)?;
                    refused.push(Some(bad));
                }
            }
        }
        to_writer.send(valid).expect("the writer thread is gone");
        pending.push_back(Pending { messages, refused });
    }
    Ok(())
}

/// One poll, then whatever else is already buffered, up to `batch_max` records.
fn poll_batch(consumer: &mut Consumer, batch_max: usize) -> Result<Vec<Message>, ClientError> {
    let mut messages = consumer.poll(POLL_WAIT)?;
    while !messages.is_empty() && messages.len() < batch_max {
        let more = consumer.poll(Duration::ZERO)?;
        if more.is_empty() {
            break;
        }
        messages.extend(more);
    }
    Ok(messages)
}

/// Parses every message, spreading them over `workers` threads; results in order.
fn parse_all(messages: &[Message], workers: usize) -> Vec<Result<Parsed, Bad>> {
    let parse = |m: &Message| record::parse(m.partition, m.offset, &m.value);
    if workers <= 1 || messages.len() < 64 {
        return messages.iter().map(parse).collect();
    }
    let chunk = messages.len().div_ceil(workers);
    thread::scope(|scope| {
        let handles: Vec<_> = messages
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(parse).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("parse worker panicked")).collect()
    })
}

/// Acknowledges, rejects or NACKs one batch's records according to the writer's verdicts.
fn settle(
    consumer: &mut Consumer,
    shared: &Shared,
    batch: Pending,
    outcome: Outcome,
    warnings: &mut WarnLimiter,
) -> Result<(), ClientError> {
    let stats = &shared.stats;
    let verdicts = match outcome {
        Ok(v) => v,
        Err(_) => {
            stats.batch_errors.fetch_add(1, Relaxed);
            for (message, refused) in batch.messages.iter().zip(&batch.refused) {
                if refused.is_none() {
                    consumer.nack(message, RETRY_DELAY)?;
                }
            }
            return Ok(());
        }
    };
    stats.batches.fetch_add(1, Relaxed);
    let mut verdicts = verdicts.into_iter();
    for (message, refused) in batch.messages.iter().zip(&batch.refused) {
        if refused.is_some() {
            continue;
        }
        match verdicts.next().expect("one verdict per valid record") {
            Verdict::Stored => {
                stats.records_stored.fetch_add(1, Relaxed);
                consumer.ack(message)?;
            }
            Verdict::Duplicate => {
                stats.records_duplicate.fetch_add(1, Relaxed);
                consumer.ack(message)?;
            }
            Verdict::Expired => {
                stats.records_expired.fetch_add(1, Relaxed);
                consumer.ack(message)?;
            }
            Verdict::Refused(bad) => {
                stats.count_bad(bad.reason);
                warnings.warn(message, &bad);
                consumer.reject(message)?;
            }
        }
    }
    assert!(verdicts.next().is_none(), "more verdicts than records");
    Ok(())
}

/// The writer thread: stores batches, and runs retention between them when it is due (so
/// retention never races a write, and never delays a batch's verdict).
fn write_loop(mut store: Store, batches: Receiver<Vec<Parsed>>, verdicts: mpsc::Sender<Outcome>) {
    loop {
        match batches.recv_timeout(store.retention_due_in()) {
            Ok(batch) => {
                let outcome = store.write_batch(&batch);
                if verdicts.send(outcome).is_err() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        store.retain_if_due();
    }
}

/// Logs bad records at a bounded rate.
#[derive(Debug, Default)]
struct WarnLimiter {
    window_start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl WarnLimiter {
    fn warn(&mut self, message: &Message, bad: &Bad) {
        let now = Instant::now();
        if self.window_start.is_none_or(|s| now - s >= Duration::from_secs(1)) {
            if self.suppressed > 0 {
                warn!("{} more bad records not logged", self.suppressed);
            }
            self.window_start = Some(now);
            self.count = 0;
            self.suppressed = 0;
        }
        if self.count < BAD_WARNINGS_PER_S {
            self.count += 1;
            warn!(
                "bad record {}:{} ({}): {}; sent to the dead-letter topic",
                message.partition,
                message.offset,
                bad.reason.name(),
                bad.detail
            );
        } else {
            self.suppressed += 1;
        }
    }
}
