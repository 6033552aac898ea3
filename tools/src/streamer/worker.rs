//! A publishing worker: one thread, one [`Producer`], the rows of the GPUs hashed to it.
//!
//! The worker keeps every record it sent in `pending` until its outcome comes back:
//! acknowledged (dropped), refused for good (counted and logged), or anything a retry may
//! cure (queued to be sent again). When the producer fails (its own reconnects gave up,
//! or the broker is down at start) the worker drops it, queues every pending record again
//! in order, and opens a new producer with backoff and full jitter, for as long as it takes:
//! it never drops a record that was not acknowledged. Records sent twice this way (their
//! first copy was stored but the reply was lost) are duplicates, which at-least-once allows.
//!
//! On stop (SIGINT/SIGTERM) it takes no new rows, sends what it holds, and waits for the
//! outcomes up to the drain timeout; whatever is still unacknowledged then is counted.
//!
//! The one failure it does not retry is a refused token (`AUTH_FAILED`, or `AUTH_REQUIRED`
//! without one: [`ClientError::is_auth_refused`]): every connection would be refused alike.
//! The worker records the refusal in [`Counters::auth_refused`], sets the run's stop flag
//! so the reader and the other workers stop too, and ends at once, its records counted
//! as unacknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mq_client::{
    Backoff, BackoffConfig, ClientConfig, ClientError, ErrorCode, Outcome, Producer, ProducerConfig,
};

use super::convert::{Clock, Prepared, TIMESTAMP_BYTES};
use super::stats::{Counters, FailReason};

/// How often (in sends) a worker collects outcomes while it is busy sending.
const COLLECT_EVERY_SENDS: u32 = 256;
/// Longest wait for new rows before the producer is looked after again.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Longest single sleep, so a stop is noticed soon.
const SLEEP_SLICE: Duration = Duration::from_millis(50);
/// Warnings of one kind a worker prints before it only counts.
const WARNINGS_MAX: u32 = 10;

/// One row to publish.
#[derive(Debug, Clone)]
pub struct Job {
    /// Line of the row in its file, for messages.
    pub line: u64,
    /// The record.
    pub record: Arc<Prepared>,
    /// Processing time, set when first sent and kept on resends.
    stamp: Option<[u8; TIMESTAMP_BYTES]>,
    /// Whether it was sent before (a resend).
    sent_before: bool,
}

impl Job {
    /// A row not sent yet.
    pub fn new(line: u64, record: Arc<Prepared>) -> Job {
        Job { line, record, stamp: None, sent_before: false }
    }
}

/// What every worker is told.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker addresses, tried in order.
    pub addrs: Vec<String>,
    /// Topic to publish to.
    pub topic: String,
    /// Connection settings of each producer.
    pub client: ClientConfig,
    /// Batching of each producer.
    pub producer: ProducerConfig,
    /// How long to wait for outcomes after a stop.
    pub drain_timeout: Duration,
    /// Set by a second stop signal: the drain ends at once, whatever is unacknowledged is
    /// counted as such and the summary follows.
    pub abandon: Arc<AtomicBool>,
    /// Pacing of new producers and of resends after an error (no bound: keep trying).
    pub retry: BackoffConfig,
}

/// Counts kept by the worker and added to the shared [`Counters`] now and then: one shared
/// cache line written by every record of every thread would cost more than the records.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    acked: u64,
    resent: u64,
}

/// How many records may share one reading of the clock when nothing waited in between:
/// at full speed they are sent within microseconds of each other.
const STAMP_REUSES_MAX: u32 = 32;

/// A record sent and waiting for its outcome.
#[derive(Debug)]
struct Pending {
    seq: u64,
    job: Option<Job>,
}

/// One worker thread's state. See the [module docs](self).
#[derive(Debug)]
pub struct Worker {
    id: usize,
    config: Arc<WorkerConfig>,
    inbox: Receiver<Vec<Job>>,
    inbox_closed: bool,
    queue: std::vec::IntoIter<Job>,
    stop: Arc<AtomicBool>,
    stop_seen: Option<Instant>,
    counters: Arc<Counters>,
    producer: Option<Producer>,
    pending: VecDeque<Pending>,
    retry: VecDeque<Job>,
    backoff: Backoff,
    clock: Clock,
    stamp: [u8; TIMESTAMP_BYTES],
    stamp_uses: u32,
    tally: Tally,
    buf: Vec<u8>,
    sends: u32,
    warnings: u32,
    failures: u32,
    /// The broker refused the token: end at once, no drain.
    refused: bool,
}

impl Worker {
    /// A worker that takes chunks of jobs from `inbox`.
    pub fn new(
        id: usize,
        config: Arc<WorkerConfig>,
        inbox: Receiver<Vec<Job>>,
        stop: Arc<AtomicBool>,
        counters: Arc<Counters>,
    ) -> Worker {
        Worker {
            id,
            backoff: Backoff::new(config.retry.clone()),
            config,
            inbox,
            inbox_closed: false,
            queue: Vec::new().into_iter(),
            stop,
            stop_seen: None,
            counters,
            producer: None,
            pending: VecDeque::new(),
            retry: VecDeque::new(),
            clock: Clock::default(),
            stamp: [0; TIMESTAMP_BYTES],
            stamp_uses: STAMP_REUSES_MAX,
            tally: Tally::default(),
            buf: Vec::new(),
            sends: 0,
            warnings: 0,
            failures: 0,
            refused: false,
        }
    }

    /// Publishes until the inbox closes (or a stop), drains, and counts what is left.
    pub fn run(mut self) {
        while let Some(job) = self.next_job() {
            self.publish(job);
        }
        self.drain();
        self.finish();
    }

    /// Whether a stop was asked for; remembers when it was first seen.
    fn stopped(&mut self) -> bool {
        if self.stop_seen.is_none() && self.stop.load(Relaxed) {
            self.stop_seen = Some(Instant::now());
        }
        self.stop_seen.is_some()
    }

    /// Whether the drain after a stop has run out of time (or was abandoned).
    fn out_of_time(&mut self) -> bool {
        self.stopped();
        self.stop_seen.is_some_and(|at| {
            at.elapsed() >= self.config.drain_timeout || self.config.abandon.load(Relaxed)
        })
    }

    /// The next job: a resend first, then new rows (none after a stop).
    fn next_job(&mut self) -> Option<Job> {
        loop {
            if self.refused || self.out_of_time() {
                return None;
            }
            if let Some(job) = self.retry.pop_front() {
                return Some(job);
            }
            if self.stopped() {
                return None;
            }
            if let Some(job) = self.queue.next() {
                return Some(job);
            }
            if self.inbox_closed {
                return None;
            }
            self.refill();
        }
    }

    /// Takes the next chunk from the inbox, looking after the producer while none comes.
    fn refill(&mut self) {
        let chunk = match self.inbox.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                self.collect();
                let wait = self.linger_left().unwrap_or(IDLE_WAIT).min(IDLE_WAIT);
                match self.inbox.recv_timeout(wait) {
                    Ok(chunk) => Some(chunk),
                    Err(RecvTimeoutError::Timeout) => return,
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match chunk {
            Some(chunk) => self.queue = chunk.into_iter(),
            None => self.inbox_closed = true,
        }
    }

    fn linger_left(&self) -> Option<Duration> {
        let deadline = self.producer.as_ref()?.linger_deadline()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Sends one job: waits for a producer first. (The rate limit is the reader's: it
    /// hands rows out no faster than `--rate`, for all workers together.)
    fn publish(&mut self, mut job: Job) {
        if self.producer.is_none() && !self.connect() {
            self.retry.push_front(job);
            return;
        }
        let stamp = match job.stamp {
            Some(stamp) => stamp,
            None => *job.stamp.insert(self.now()),
        };
        job.record.write(&stamp, &mut self.buf);
        let producer = self.producer.as_mut().expect("connected above");
        let key = job.record.key.as_bytes();
        match producer.send(&self.config.topic, Some(key), &self.buf) {
            Ok(seq) => {
                debug_assert!(self.pending.back().is_none_or(|p| p.seq + 1 == seq));
                self.tally.published += 1;
                if job.sent_before {
                    self.tally.resent += 1;
                }
                job.sent_before = true;
                self.pending.push_back(Pending { seq, job: Some(job) });
                self.sends += 1;
                if self.sends.is_multiple_of(COLLECT_EVERY_SENDS) {
                    self.collect();
                }
            }
            Err(ClientError::InvalidRequest(e)) => {
                self.counters.fail(FailReason::TooLarge);
                self.warn(format_args!("line {}: not sent: {e}", job.line));
            }
            Err(e) => self.reset(&e, Some(job)),
        }
    }

    /// The processing time for the next record: a fresh reading of the clock, or the last
    /// one if few records used it and nothing waited since.
    fn now(&mut self) -> [u8; TIMESTAMP_BYTES] {
        if self.stamp_uses >= STAMP_REUSES_MAX {
            self.stamp = self.clock.now();
            self.stamp_uses = 0;
        }
        self.stamp_uses += 1;
        self.stamp
    }

    /// Adds the worker's own counts to the shared ones; the next record reads the clock.
    fn flush_tally(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        self.counters.published.fetch_add(tally.published, Relaxed);
        self.counters.acked.fetch_add(tally.acked, Relaxed);
        self.counters.resent.fetch_add(tally.resent, Relaxed);
        self.stamp_uses = STAMP_REUSES_MAX;
    }

    /// Sends lingering batches and applies the outcomes that have arrived.
    fn collect(&mut self) {
        self.flush_tally();
        let Some(producer) = self.producer.as_mut() else { return };
        match producer.poll() {
            Ok(outcomes) => self.apply(outcomes),
            Err(e) => self.reset(&e, None),
        }
    }

    /// Applies outcomes to pending records.
    fn apply(&mut self, outcomes: Vec<Outcome>) {
        let mut retryable = None;
        let mut refusal = None;
        for outcome in outcomes {
            let Some(front) = self.pending.front().map(|p| p.seq) else { break };
            let Some(slot) =
                outcome.seq.checked_sub(front).and_then(|i| self.pending.get_mut(i as usize))
            else {
                continue;
            };
            let Some(job) = slot.job.take() else { continue };
            match outcome.result {
                Ok(_) => {
                    self.tally.acked += 1;
                    self.backoff.reset();
                }
                Err(e) if e.is_auth_refused() => {
                    self.retry.push_back(job);
                    refusal = Some(e);
                }
                Err(e) if is_permanent(&e) => {
                    self.counters.fail(FailReason::Rejected);
                    self.warn(format_args!("line {}: refused by the broker: {e}", job.line));
                }
                Err(e) => {
                    self.retry.push_back(job);
                    retryable = Some(e);
                }
            }
        }
        while self.pending.front().is_some_and(|p| p.job.is_none()) {
            self.pending.pop_front();
        }
        if let Some(e) = refusal {
            self.refuse(&e);
        } else if let Some(e) = retryable {
            let id = self.id;
            self.warn(format_args!("worker {id}: {e}; sending again after a pause"));
            self.pause();
        }
    }

    /// Drops a failed producer: every pending record (then `current`) goes back to the
    /// front of the resend queue, in order, and a pause follows.
    fn reset(&mut self, error: &ClientError, current: Option<Job>) {
        self.producer = None;
        let mut again: Vec<Job> = self.pending.drain(..).filter_map(|p| p.job).collect();
        again.extend(current);
        let n = again.len();
        for job in again.into_iter().rev() {
            self.retry.push_front(job);
        }
        if error.is_auth_refused() {
            self.refuse(error);
            return;
        }
        self.failures += 1;
        if self.failures <= WARNINGS_MAX || self.failures.is_multiple_of(100) {
            warn!("worker {}: {error}; {n} records kept to send again", self.id);
        }
        self.pause();
    }

    /// Opens a producer, with backoff, until one opens or the drain runs out of time; not
    /// after the broker refused the token.
    fn connect(&mut self) -> bool {
        loop {
            if self.refused || self.out_of_time() {
                return false;
            }
            let config = &self.config;
            match Producer::connect(&config.addrs, config.client.clone(), config.producer.clone()) {
                Ok(producer) => {
                    if self.failures > 0 {
                        info!("worker {}: connected to the broker again", self.id);
                    }
                    self.producer = Some(producer);
                    self.counters.connects.fetch_add(1, Relaxed);
                    return true;
                }
                Err(e) if e.is_auth_refused() => {
                    self.refuse(&e);
                    return false;
                }
                Err(e) => {
                    self.failures += 1;
                    if self.failures <= WARNINGS_MAX || self.failures.is_multiple_of(100) {
                        warn!("worker {}: {e}; trying again", self.id);
                    }
                    self.pause();
                }
            }
        }
    }

    /// The broker refused the token: records the refusal for the summary (the first
    /// worker's), stops the whole run, and makes this worker end without a drain.
    fn refuse(&mut self, error: &ClientError) {
        self.refused = true;
        self.producer = None;
        if self.counters.auth_refused.set(error.clone()).is_ok() {
            error!("worker {}: the broker refused the auth token ({error}); stopping", self.id);
        }
        self.stop.store(true, Relaxed);
    }

    /// Sleeps for the next backoff delay, in slices, never past the drain deadline.
    fn pause(&mut self) {
        self.flush_tally();
        let cap = self.config.retry.cap;
        let delay = self.backoff.fail(Instant::now()).unwrap_or(cap);
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.out_of_time() {
            std::thread::sleep(SLEEP_SLICE.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// Sends what is queued for resending and waits for every outcome.
    fn drain(&mut self) {
        loop {
            if self.refused || self.out_of_time() {
                return;
            }
            if let Some(job) = self.retry.pop_front() {
                self.publish(job);
                continue;
            }
            let Some(producer) = self.producer.as_mut() else { return };
            if self.pending.is_empty() && producer.pending() == 0 {
                return;
            }
            match producer.flush() {
                Ok(outcomes) => {
                    self.apply(outcomes);
                    if !self.pending.is_empty() && self.retry.is_empty() {
                        // Every record gets an outcome from a flush; if one did not,
                        // send it again rather than wait for ever.
                        let lost = ClientError::UnexpectedReply("no outcome after flush".into());
                        self.reset(&lost, None);
                    }
                }
                Err(e) => self.reset(&e, None),
            }
        }
    }

    /// Counts what was left unacknowledged or unsent, and empties the inbox so the reader
    /// is never blocked on this worker.
    fn finish(mut self) {
        self.flush_tally();
        let unacked = self.pending.iter().filter(|p| p.job.is_some()).count() + self.retry.len();
        if unacked > 0 {
            warn!("worker {}: {unacked} records unacknowledged", self.id);
        }
        self.counters.unacked.fetch_add(unacked as u64, Relaxed);
        let mut unsent = self.queue.len() as u64;
        for chunk in self.inbox.iter() {
            unsent += chunk.len() as u64;
        }
        self.counters.unsent.fetch_add(unsent, Relaxed);
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        self.warnings += 1;
        if self.warnings <= WARNINGS_MAX {
            warn!("{what}");
        } else if self.warnings == WARNINGS_MAX + 1 {
            warn!("worker {}: further warnings are only counted", self.id);
        }
    }
}

/// Whether a record's error is final: a retry would get the same answer. Lost
/// connections, timeouts, a full or failing disk and broker shutdowns are not final.
pub fn is_permanent(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code, .. } => !matches!(
            *code,
            ErrorCode::STORAGE_FULL
                | ErrorCode::STORAGE_ERROR
                | ErrorCode::INTERNAL
                | ErrorCode::SHUTTING_DOWN
                | ErrorCode::TOO_MANY_CONNECTIONS
                | ErrorCode::SLOW_CONSUMER
                | ErrorCode::IDLE_TIMEOUT
        ),
        ClientError::InvalidRequest(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_a_retry_cannot_cure_are_final() {
        let broker = |code| ClientError::Broker { code, message: String::new() };
        assert!(is_permanent(&broker(ErrorCode::BAD_ARG)));
        assert!(is_permanent(&broker(ErrorCode::FRAME_TOO_LARGE)));
        assert!(!is_permanent(&broker(ErrorCode::STORAGE_FULL)));
        assert!(!is_permanent(&broker(ErrorCode::SHUTTING_DOWN)));
        assert!(!is_permanent(&ClientError::Closed));
        assert!(!is_permanent(&ClientError::Timeout { timeout_ms: 1 }));
        let gave_up =
            ClientError::GaveUp { attempts: 3, last_error: Box::new(ClientError::Closed) };
        assert!(!is_permanent(&gave_up));
    }
}
