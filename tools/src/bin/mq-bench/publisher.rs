//! One publisher thread of `mq-bench`: a [`Producer`] on its own connection, sending
//! stamped records as fast as it can or at a fixed rate.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mq_client::{ClientError, Outcome, Producer};

use crate::shared::{Shared, HEADER_BYTES};
use crate::subscriber::new_histogram;

/// What one publisher did.
#[derive(Debug)]
pub struct Published {
    /// Records with a placement.
    pub placed: u64,
    /// Records with an error outcome.
    pub failed: u64,
    /// When its last outcome arrived.
    pub finished: Option<Instant>,
    /// In paced mode, how late each record left after its due time, in microseconds: the
    /// sender's own share of the end-to-end latency (sleep overshoot, scheduling, a full
    /// pipeline).
    pub late_us: Histogram<u64>,
}

/// How a publisher paces itself and when it stops.
#[derive(Debug, Clone)]
pub struct Plan {
    /// This publisher's number, written into every record.
    pub index: u32,
    /// Topic.
    pub topic: String,
    /// Bytes per record, header included.
    pub size: usize,
    /// Records to send, or `None` to send until `deadline`.
    pub count: Option<u64>,
    /// When to stop sending in duration mode.
    pub deadline: Option<Instant>,
    /// Records per second, or `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Distinct keys to cycle through, 0 for no key.
    pub keys: u32,
    /// Most records sent but not yet received by the slowest group; 0 for no bound.
    pub lag_max: u64,
}

/// Sends until the plan says stop, then flushes. Outcomes are polled every so often so
/// they never pile up.
///
/// # Errors
/// What the producer reports when it cannot go on (the broker is gone).
pub fn run(mut producer: Producer, plan: &Plan, shared: &Shared) -> Result<Published, ClientError> {
    let mut payload = vec![0x5a_u8; plan.size];
    let keys: Vec<String> = (0..plan.keys).map(|k| format!("key-{k}")).collect();
    let mut done = Published { placed: 0, failed: 0, finished: None, late_us: new_histogram() };
    let started = shared.start_line();
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    if interval.is_some() {
        // Paced sends sleep between records; the default timer slack (50 µs) made every
        // record that late, which is the bench's delay, not the broker's.
        if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
            log::debug!("timer slack unchanged: {e}");
        }
    }
    let mut seq: u64 = 0;
    let mut stamp = started;
    loop {
        if plan.count.is_some_and(|n| seq >= n)
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        stamp = match interval {
            Some(every) => {
                pace(&mut producer, started + every.mul_f64(seq as f64), &mut done, shared)?
            }
            // Unpaced, the clock is read every 16 records: a read costs about as much as
            // sending a record, and 16 records take a few microseconds, far below the
            // latencies measured at full load.
            None if seq.is_multiple_of(16) => Instant::now(),
            None => stamp,
        };
        if plan.lag_max > 0 && seq.is_multiple_of(256) {
            hold_back(&mut producer, plan.lag_max, shared, &mut done)?;
        }
        write_header(&mut payload, shared.nanos(stamp), plan.index, seq as u32);
        let key = (!keys.is_empty()).then(|| keys[(seq % keys.len() as u64) as usize].as_bytes());
        producer.send(&plan.topic, key, &payload)?;
        seq += 1;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        if seq.is_multiple_of(1024) {
            count(producer.poll()?, &mut done, shared);
        }
    }
    count(producer.flush()?, &mut done, shared);
    done.finished = Some(Instant::now());
    Ok(done)
}

/// The 16-byte header every record starts with: send time (ns since the bench's shared
/// clock), publisher, sequence number, all big-endian.
fn write_header(payload: &mut [u8], send_ns: u64, publisher: u32, seq: u32) {
    payload[0..8].copy_from_slice(&send_ns.to_be_bytes());
    payload[8..12].copy_from_slice(&publisher.to_be_bytes());
    payload[12..HEADER_BYTES].copy_from_slice(&seq.to_be_bytes());
}

/// Waits until `due`, sending lingering batches on time meanwhile, and returns `due`: the
/// record is stamped with when it *should* have gone out, so a sender that falls behind
/// shows up in the latencies (no coordinated omission).
fn pace(
    producer: &mut Producer,
    due: Instant,
    done: &mut Published,
    shared: &Shared,
) -> Result<Instant, ClientError> {
    loop {
        let now = Instant::now();
        if now >= due {
            let late = now.duration_since(due).as_micros() as u64;
            done.late_us.saturating_record(late.max(1));
            return Ok(due);
        }
        let wake = match producer.linger_deadline() {
            Some(linger) if linger <= now => {
                count(producer.poll()?, done, shared);
                continue;
            }
            Some(linger) => linger.min(due),
            None => due,
        };
        // No spinning: on two cores a spinning sender takes the CPU the broker needs. The
        // sleep may overshoot by the wake-up latency (timer slack is 1 ns in rate mode); the
        // stamp is still `due`.
        std::thread::sleep(wake - now);
    }
}

/// Waits while the slowest subscriber group is more than `lag_max` records behind, so
/// the broker's retention never drops a record a group has not received.
fn hold_back(
    producer: &mut Producer,
    lag_max: u64,
    shared: &Shared,
    done: &mut Published,
) -> Result<(), ClientError> {
    while shared.lag() > lag_max && !shared.stop.load(Ordering::Relaxed) {
        count(producer.poll()?, done, shared);
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn count(outcomes: Vec<Outcome>, done: &mut Published, shared: &Shared) {
    let placed = outcomes.iter().filter(|o| o.result.is_ok()).count() as u64;
    done.placed += placed;
    done.failed += outcomes.len() as u64 - placed;
    shared.placed.fetch_add(placed, Ordering::Relaxed);
    if let Some(e) = outcomes.iter().find_map(|o| o.result.as_ref().err()) {
        log::warn!("records failed: {e}");
    }
}
