//! One run of the streamer: open the input, start the workers and the progress line, feed
//! rows to workers by GPU, stop on a signal, `--count`, `--duration` or the end of the
//! input, drain, and sum up. `--dry-run` prints the records instead of publishing them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mq_client::{ClientError, ErrorCode};

use super::convert::Clock;
use super::rate::RateLimiter;
use super::rows::{Rows, RowsError};
use super::schema::Layout;
use super::source::{CsvSource, Item, SourceError};
use super::stats::{Counters, Snapshot};
use super::synthetic::Synthetic;
use super::worker::{Job, Worker, WorkerConfig};
use super::{Shard, Source};

/// Rows per chunk handed to a worker when there is no rate limit.
const CHUNK_ROWS_MAX: usize = 256;
/// Chunks that may wait for one worker before the reader blocks.
const CHANNEL_CHUNKS: usize = 4;
/// Longest sleep of the paced reader, so that a stop is noticed soon.
const PACE_SLEEP_MAX: Duration = Duration::from_millis(50);
/// Skipped rows logged one by one before they are only counted.
const SKIP_LOGS_MAX: u64 = 20;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A CSV file.
    File(PathBuf),
    /// Generated DCGM-shaped data.
    Synthetic {
        /// Hosts.
        hosts: u32,
        /// GPUs per host.
        gpus_per_host: u32,
        /// Seed of the random walks.
        seed: u64,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The rows.
    pub input: Input,
    /// Replay the input for ever (`--loop`) instead of once.
    pub replay: bool,
    /// Which rows are this instance's.
    pub shard: Shard,
    /// Print records instead of publishing.
    pub dry_run: bool,
    /// Worker threads (each with its own producer).
    pub workers: usize,
    /// Stop after this many rows.
    pub count: Option<u64>,
    /// Stop reading after this long.
    pub duration: Option<Duration>,
    /// Rows longer than this are skipped.
    pub row_bytes_max: usize,
    /// Interval of the progress line on stderr; `None` for none.
    pub progress_every: Option<Duration>,
    /// Records per second for the whole streamer (all workers together); 0 for no limit.
    pub rate_per_s: f64,
    /// What the workers are told (broker, topic, drain timeout, batching).
    pub worker: WorkerConfig,
}

/// Why a run could not start or had to end.
#[derive(Debug)]
pub enum RunError {
    /// The input cannot be opened or has no usable header.
    Source(SourceError),
    /// The file has a header and no data rows.
    HeaderOnly,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Source(e) => e.fmt(f),
            RunError::HeaderOnly => f.write_str("the file has a header row and no data rows"),
        }
    }
}

impl std::error::Error for RunError {}

/// How a run went.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Final counters.
    pub counters: Snapshot,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// A read error that ended the input early, if any.
    pub input_error: Option<String>,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Set when the broker refused the auth token and the run stopped for it: what to
    /// tell the user (see [`auth_refusal_message`]).
    pub auth_refused: Option<String>,
}

impl Summary {
    /// 0 when every row read was acknowledged, skipped or failed on its own and not every
    /// row failed; 1 when records were left unacknowledged, every row failed, or reading
    /// broke off; 2 when the broker refused the auth token.
    pub fn exit_code(&self) -> u8 {
        if self.auth_refused.is_some() {
            return 2;
        }
        let c = &self.counters;
        let failed = c.skipped_total() + c.too_large + c.rejected;
        let all_failed = c.rows > 0 && failed == c.rows;
        if c.unacked > 0 || all_failed || self.input_error.is_some() {
            1
        } else {
            0
        }
    }

    /// The summary text for stderr.
    pub fn text(&self) -> String {
        let mut text = self.counters.summary(self.elapsed, self.dry_run);
        if let Some(e) = &self.input_error {
            text.push_str(&format!("  input error: {e}\n"));
        }
        text
    }
}

/// Runs the streamer until the input ends, `stop` is set, or a limit is reached. Dry-run
/// records go to `out`, one JSON object per line.
///
/// # Errors
/// [`RunError`] if the input cannot be read at all.
pub fn run(
    options: &Options,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let (source, file) = open_input(options)?;
    let mut rows = Rows::new(source, file, options.replay, options.shard, options.row_bytes_max);
    let counters = Arc::new(Counters::default());
    let progress = options.progress_every.map(|every| Progress::start(every, counters.clone()));
    let limits = Limits::new(options, started);
    let outcome = if options.dry_run {
        print_records(&mut rows, &limits, &stop, &counters, options.rate_per_s, out)
    } else {
        publish_records(&mut rows, &limits, &stop, &counters, options)
    };
    drop(progress);
    let input_error = match outcome {
        Ok(()) => None,
        Err(RowsError::HeaderOnly) => return Err(RunError::HeaderOnly),
        Err(RowsError::Source(e)) => {
            error!("{e}");
            Some(e.to_string())
        }
    };
    info!("{} passes over the input", rows.passes());
    let auth_refused =
        counters.auth_refused.get().map(|e| auth_refusal_message(e, &options.worker.addrs));
    let counters = counters.snapshot();
    Ok(Summary {
        counters,
        elapsed: started.elapsed(),
        input_error,
        dry_run: options.dry_run,
        auth_refused,
    })
}

/// The sentence for a token the broker refused (`AUTH_FAILED`: wrong; `AUTH_REQUIRED`:
/// none given), naming the broker, its answer and the setting to fix.
pub fn auth_refusal_message(error: &ClientError, addrs: &[String]) -> String {
    let broker = addrs.join(",");
    match error.code() {
        Some(ErrorCode::AUTH_REQUIRED) => format!(
            "auth refused: the broker at {broker} requires an auth token and none was given \
             ({error}); set --auth-token or MQ_AUTH_TOKEN"
        ),
        _ => format!(
            "auth refused: the broker at {broker} refused the auth token ({error}); retrying \
             cannot help: check --auth-token or MQ_AUTH_TOKEN"
        ),
    }
}

fn open_input(options: &Options) -> Result<(Box<dyn Source + Send>, Option<PathBuf>), RunError> {
    match &options.input {
        Input::File(path) => {
            let source = CsvSource::open(path, options.shard, options.row_bytes_max)
                .map_err(RunError::Source)?;
            let schema = source.schema();
            let layout = match schema.layout {
                Layout::Long => "long (one metric per row)",
                Layout::Wide => "wide (one GPU per row)",
            };
            info!("{}: {} columns, {layout} layout", path.display(), schema.columns.len());
            if !schema.has_identity() {
                warn!(
                    "no uuid column, nor hostname and gpu index columns: every row will be skipped"
                );
            }
            Ok((Box::new(source), Some(path.clone())))
        }
        Input::Synthetic { hosts, gpus_per_host, seed } => {
            let generator = Synthetic::new(*hosts, *gpus_per_host, options.shard, *seed);
            info!("synthetic: {} GPUs in shard {}", generator.gpu_count(), options.shard);
            Ok((Box::new(generator), None))
        }
    }
}

/// `--count` and `--duration`.
#[derive(Debug)]
struct Limits {
    count: Option<u64>,
    until: Option<Instant>,
}

impl Limits {
    fn new(options: &Options, started: Instant) -> Limits {
        Limits { count: options.count, until: options.duration.map(|d| started + d) }
    }

    fn reached(&self, rows: u64) -> bool {
        self.count.is_some_and(|c| rows >= c)
            || (rows.is_multiple_of(64) && self.until.is_some_and(|u| Instant::now() >= u))
    }
}

/// Counts an item's labels warning or skip and logs it (first pass only, first few only);
/// the caller counts the row.
fn count_item(item: &Item, first_pass: bool, counters: &Counters) {
    match item {
        Item::Record { labels_malformed: true, line, .. } => {
            let n = counters.labels_warnings.fetch_add(1, Relaxed);
            if first_pass && n < SKIP_LOGS_MAX {
                warn!("line {line}: labels_raw partly malformed; kept the labels that parse");
            }
        }
        Item::Record { .. } => {}
        Item::Skipped { line, skip } => {
            let n: u64 = counters.skipped.iter().map(|c| c.load(Relaxed)).sum();
            counters.skip(skip.reason);
            if first_pass && n < SKIP_LOGS_MAX {
                warn!("line {line}: skipped ({}): {}", skip.reason.name(), skip.detail);
            } else if first_pass && n == SKIP_LOGS_MAX {
                warn!("further skipped rows are only counted");
            }
        }
    }
}

/// `--dry-run`: each record as one JSON line on `out`.
fn print_records(
    rows: &mut Rows,
    limits: &Limits,
    stop: &AtomicBool,
    counters: &Counters,
    rate_per_s: f64,
    out: &mut dyn Write,
) -> Result<(), RowsError> {
    let mut clock = Clock::default();
    let mut limiter = RateLimiter::new(rate_per_s);
    let mut buf = Vec::new();
    let mut taken = 0;
    while !stop.load(Relaxed) && !limits.reached(taken) {
        let Some((item, first_pass)) = rows.next_row()? else { break };
        taken += 1;
        counters.rows.fetch_add(1, Relaxed);
        count_item(&item, first_pass, counters);
        let Item::Record { prepared, .. } = item else { continue };
        while let Some(wait) = limiter.take(Instant::now()) {
            std::thread::sleep(wait);
        }
        prepared.write(&clock.now(), &mut buf);
        buf.push(b'\n');
        if out.write_all(&buf).is_err() {
            break; // the reader went away (`| head`): stop quietly
        }
        // Printed, not published: the summary says "records printed" from this counter.
        counters.acked.fetch_add(1, Relaxed);
    }
    let _ = out.flush();
    Ok(())
}

/// Feeds rows to the workers by GPU, then waits for them.
fn publish_records(
    rows: &mut Rows,
    limits: &Limits,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    options: &Options,
) -> Result<(), RowsError> {
    let workers = options.workers.max(1);
    let config = Arc::new(options.worker.clone());
    let (senders, handles): (Vec<SyncSender<Vec<Job>>>, Vec<JoinHandle<()>>) = (0..workers)
        .map(|id| {
            let (tx, rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
            let worker = Worker::new(id, config.clone(), rx, stop.clone(), counters.clone());
            let handle = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || worker.run())
                .expect("a thread starts");
            (tx, handle)
        })
        .unzip();
    let chunk_rows = chunk_rows(options.rate_per_s);
    let mut limiter = RateLimiter::new(options.rate_per_s);
    let mut chunks: Vec<Vec<Job>> = (0..workers).map(|_| Vec::with_capacity(chunk_rows)).collect();
    let mut taken = 0;
    // Rows are counted here and added to the shared counter once per chunk, so that the
    // reader does not share a written cache line with the workers on every row.
    let mut rows_uncounted = 0;
    let result = loop {
        if stop.load(Relaxed) || limits.reached(taken) {
            break Ok(());
        }
        let (item, first_pass) = match rows.next_row() {
            Ok(Some(next)) => next,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        taken += 1;
        rows_uncounted += 1;
        count_item(&item, first_pass, counters);
        let Item::Record { line, prepared, .. } = item else { continue };
        if !pace(&mut limiter, &mut chunks, &senders, stop) {
            counters.unsent.fetch_add(1, Relaxed);
            break Ok(());
        }
        let w = options.shard.worker_of(prepared.key_hash, workers);
        chunks[w].push(Job::new(line, prepared));
        if chunks[w].len() >= chunk_rows {
            counters.rows.fetch_add(std::mem::take(&mut rows_uncounted), Relaxed);
            let chunk = std::mem::replace(&mut chunks[w], Vec::with_capacity(chunk_rows));
            if senders[w].send(chunk).is_err() {
                break Ok(()); // the worker died; joining it below says so
            }
        }
    };
    counters.rows.fetch_add(rows_uncounted, Relaxed);
    for (sender, chunk) in senders.iter().zip(chunks) {
        if stop.load(Relaxed) {
            counters.unsent.fetch_add(chunk.len() as u64, Relaxed);
        } else if !chunk.is_empty() {
            let _ = sender.send(chunk);
        }
    }
    drop(senders);
    for (id, handle) in handles.into_iter().enumerate() {
        if handle.join().is_err() {
            error!("worker {id} panicked");
        }
    }
    result
}

/// Waits for a token of the rate limit (`--rate` is the streamer's total, so the one
/// reader paces, not each worker). Before it sleeps it hands every partial chunk out, so
/// that a worker whose GPUs are rare is not kept waiting for a full chunk. False when a
/// stop came while it waited.
fn pace(
    limiter: &mut RateLimiter,
    chunks: &mut [Vec<Job>],
    senders: &[SyncSender<Vec<Job>>],
    stop: &AtomicBool,
) -> bool {
    let mut handed_out = false;
    while let Some(wait) = limiter.take(Instant::now()) {
        if stop.load(Relaxed) {
            return false;
        }
        if !handed_out {
            for (chunk, sender) in chunks.iter_mut().zip(senders) {
                if !chunk.is_empty() {
                    let _ = sender.send(std::mem::take(chunk));
                }
            }
            handed_out = true;
        }
        std::thread::sleep(wait.min(PACE_SLEEP_MAX));
    }
    true
}

/// Rows per chunk: a fiftieth of a second's worth at the rate limit, so a slow worker
/// is never handed more than it sends soon.
fn chunk_rows(rate_per_s: f64) -> usize {
    if rate_per_s <= 0.0 {
        CHUNK_ROWS_MAX
    } else {
        ((rate_per_s / 50.0) as usize).clamp(1, CHUNK_ROWS_MAX)
    }
}

/// The progress line every few seconds on stderr, until dropped.
struct Progress {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    fn start(every: Duration, counters: Arc<Counters>) -> Progress {
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut last = (Instant::now(), 0);
            while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(every) {
                let now = counters.snapshot();
                let secs = last.0.elapsed().as_secs_f64();
                let rate = (now.acked - last.1) as f64 / secs;
                eprintln!("{}", now.progress_line(Some(rate)));
                last = (Instant::now(), now.acked);
            }
        });
        Progress { done: Some(done), thread: Some(thread) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
