//! One subscriber thread of `mq-bench`: a [`Consumer`] that reads the header of every
//! record, records its end-to-end latency, tells first deliveries from duplicates, and
//! acknowledges everything.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mq_client::{ClientError, Consumer};

use crate::shared::{Shared, HEADER_BYTES};

/// Latencies are recorded in microseconds, from 1 µs to an hour, to 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Which sequence numbers of one publisher were seen.
#[derive(Debug, Default, Clone)]
pub struct Seen(Vec<u64>);

impl Seen {
    /// Marks `seq`; false if it was already marked.
    pub fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1 + word / 2, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    /// Adds `other`'s marks; returns how many were marked in both.
    pub fn merge(&mut self, other: &Seen) -> u64 {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut both = 0;
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            both += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        both
    }
}

/// What one subscriber received.
#[derive(Debug)]
pub struct Received {
    /// Its group's number.
    pub group: usize,
    /// End-to-end latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// Records received for the first time (by this subscriber).
    pub unique: u64,
    /// Records this subscriber had already received.
    pub duplicates: u64,
    /// Records without a bench header (someone else's traffic on the topic).
    pub foreign: u64,
    /// When its last new record arrived.
    pub last: Option<Instant>,
    /// Sequence numbers seen, per publisher.
    pub seen: Vec<Seen>,
}

/// Polls, measures and acks until the group has every expected record or the bench stops.
///
/// # Errors
/// What the consumer reports when it cannot go on.
pub fn run(
    mut consumer: Consumer,
    group: usize,
    publishers: usize,
    shared: &Shared,
) -> Result<Received, ClientError> {
    let mut r = Received {
        group,
        latency_us: new_histogram(),
        unique: 0,
        duplicates: 0,
        foreign: 0,
        last: None,
        seen: vec![Seen::default(); publishers],
    };
    let counter = &shared.group_received[group];
    while !shared.stop.load(Ordering::Relaxed)
        && counter.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed)
    {
        let messages = consumer.poll(Duration::from_millis(50))?;
        if messages.is_empty() {
            continue;
        }
        let now = Instant::now();
        let now_ns = shared.nanos(now);
        let before = r.unique;
        for m in &messages {
            measure(&m.value, now_ns, &mut r);
            consumer.ack(m)?;
        }
        if r.unique > before {
            counter.fetch_add(r.unique - before, Ordering::Relaxed);
            r.last = Some(now);
        }
    }
    // Leaving (not just dropping the connection) deletes the ephemeral group before the
    // bench reports, so nothing of the run is left on the broker when it exits.
    consumer.close()?;
    Ok(r)
}

fn measure(value: &[u8], now_ns: u64, r: &mut Received) {
    let Some(header) = value.get(..HEADER_BYTES) else {
        r.foreign += 1;
        return;
    };
    let word = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let send_ns = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
    let (publisher, seq) = (word(8) as usize, word(12));
    let Some(seen) = r.seen.get_mut(publisher) else {
        r.foreign += 1;
        return;
    };
    if seen.insert(seq) {
        r.unique += 1;
        r.latency_us.saturating_record((now_ns.saturating_sub(send_ns) / 1000).max(1));
    } else {
        r.duplicates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tells_first_deliveries_from_duplicates() {
        let mut a = Seen::default();
        assert!(a.insert(0) && a.insert(1000) && !a.insert(1000));
        let mut b = Seen::default();
        b.insert(1000);
        b.insert(5);
        assert_eq!(a.merge(&b), 1);
        assert!(!a.insert(5));
    }
}
