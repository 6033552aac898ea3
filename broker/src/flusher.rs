//! The flusher thread: group commit that overlaps the event loop's next turn.
//!
//! With `--fsync always` on disk, the event loop appends a turn's records, asks the flusher
//! for a flush (an epoch number) and holds that turn's replies and deliveries; meanwhile it
//! reads and appends the next turn. The flusher makes everything written so far durable
//! with one `syncfs` of the data directory's file system (covering every epoch asked for
//! before it started), sends the result for the highest epoch it covered and wakes the loop,
//! which then releases the held output. Results arrive in epoch order, each covering every
//! epoch after the previous result's, so a failed flush fails exactly the epochs it covered:
//! their `PUBLISHED` replies become `STORAGE_ERROR`.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::storage::FlushFn;

/// What one flush did: the highest epoch it covered, and its error if it failed.
pub type FlushResult = (u64, Result<(), String>);

/// Handle of the flusher thread.
#[derive(Debug)]
pub struct Flusher {
    requests: Option<mpsc::Sender<u64>>,
    results: mpsc::Receiver<FlushResult>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread around the storage's flush function; `waker` wakes the event loop
    /// after each flush.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(mut flush: FlushFn, waker: Arc<Waker>) -> io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<u64>();
        let (done_tx, done_rx) = mpsc::channel::<FlushResult>();
        let thread = std::thread::Builder::new().name("mqd-flusher".into()).spawn(move || {
            while let Ok(mut epoch) = rx.recv() {
                // Requests that queued up while the last flush ran are covered by this one.
                while let Ok(later) = rx.try_recv() {
                    epoch = epoch.max(later);
                }
                let result = flush().map_err(|e| e.to_string());
                if done_tx.send((epoch, result)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?;
        Ok(Flusher { requests: Some(tx), results: done_rx, thread: Some(thread) })
    }

    /// Asks for everything written so far to be flushed, as `epoch` (increasing).
    pub fn request(&self, epoch: u64) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(epoch);
        }
    }

    /// The flushes finished since the last call, in epoch order.
    pub fn finished(&self) -> Vec<FlushResult> {
        self.results.try_iter().collect()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn waker() -> (mio::Poll, Arc<Waker>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, waker)
    }

    fn wait_for(flusher: &Flusher, epoch: u64) -> Vec<FlushResult> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.last().is_none_or(|(e, _): &FlushResult| *e < epoch) {
            assert!(Instant::now() < deadline, "epoch {epoch} never finished: {got:?}");
            got.extend(flusher.finished());
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn results_come_in_order_and_a_failure_is_reported_for_the_epochs_it_covered() {
        let (_poll, waker) = waker();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        // The second flush fails, the others succeed.
        let flusher = Flusher::start(
            Box::new(move || match counted.fetch_add(1, Ordering::SeqCst) {
                1 => Err(io::Error::other("injected")),
                _ => Ok(()),
            }),
            waker,
        )
        .unwrap();
        flusher.request(1);
        let first = wait_for(&flusher, 1);
        assert_eq!(first, vec![(1, Ok(()))]);
        flusher.request(2);
        flusher.request(3);
        let rest = wait_for(&flusher, 3);
        // Epochs 2 and 3 were covered by one failed flush, or 2 failed and 3 succeeded.
        assert_eq!(rest[0].1, Err("injected".to_string()), "{rest:?}");
        assert!(rest.windows(2).all(|w| w[0].0 < w[1].0), "{rest:?}");
        assert_eq!(rest.last().unwrap().0, 3);
    }
}
