//! The checkpoint writer thread: writes the group checkpoint (temp file, fsync, rename,
//! directory fsync) off the event loop.
//!
//! Written inline, each checkpoint stalled the loop for a journal commit (a few
//! milliseconds on ext4) every checkpoint interval under load, which was most of the p99 of
//! `--fsync interval:100` at 10,000 records/s (`BENCHMARKS.md`). The loop now serializes the
//! checkpoint (microseconds) and hands the bytes over; only the newest bytes are kept, so a
//! slow disk makes checkpoints less frequent, never queues them.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use log::warn;

use crate::storage::CheckpointSaver;

#[derive(Debug, Default)]
struct Slot {
    /// The newest checkpoint not yet written.
    pending: Option<Vec<u8>>,
    /// Set when the owner drops the handle: write what is pending, then stop.
    closing: bool,
    /// A write failed since the owner last asked.
    failed: bool,
}

/// Handle of the checkpoint writer thread. Dropping it writes what is pending and joins.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread around the storage's saver.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(mut save: CheckpointSaver) -> std::io::Result<Checkpointer> {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let state = shared.clone();
        let thread =
            std::thread::Builder::new().name("mqd-checkpoint".into()).spawn(move || {
                let (lock, ready) = &*state;
                loop {
                    let bytes = {
                        let mut slot = lock.lock().expect("checkpoint lock");
                        while slot.pending.is_none() && !slot.closing {
                            slot = ready.wait(slot).expect("checkpoint lock");
                        }
                        match slot.pending.take() {
                            Some(bytes) => bytes,
                            None => return,
                        }
                    };
                    if let Err(e) = save(&bytes) {
                        warn!("group checkpoint not written: {e}");
                        lock.lock().expect("checkpoint lock").failed = true;
                    }
                }
            })?;
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    /// Hands over a checkpoint to write; replaces one still waiting.
    pub fn submit(&self, bytes: Vec<u8>) {
        let (lock, ready) = &*self.shared;
        lock.lock().expect("checkpoint lock").pending = Some(bytes);
        ready.notify_one();
    }

    /// Whether a write failed since the last call (the caller then submits again even if
    /// nothing changed).
    pub fn take_failure(&self) -> bool {
        std::mem::take(&mut self.shared.0.lock().expect("checkpoint lock").failed)
    }

    /// Writes what is pending, stops the thread and tells whether any write failed since
    /// [`Checkpointer::take_failure`] was last called.
    pub fn finish(mut self) -> bool {
        self.stop();
        self.take_failure()
    }

    fn stop(&mut self) {
        let (lock, ready) = &*self.shared;
        lock.lock().expect("checkpoint lock").closing = true;
        ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn writes_the_newest_and_everything_pending_on_drop() {
        let written = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let sink = written.clone();
        let c = Checkpointer::start(Box::new(move |b: &[u8]| {
            sink.lock().unwrap().push(b.to_vec());
            Ok(())
        }))
        .unwrap();
        for i in 0..100u8 {
            c.submit(vec![i]);
        }
        drop(c);
        let written = written.lock().unwrap();
        // Intermediate checkpoints may be skipped, never reordered; the last is always written.
        assert_eq!(written.last(), Some(&vec![99]));
        assert!(written.windows(2).all(|w| w[0][0] < w[1][0]), "{written:?}");
    }

    #[test]
    fn failures_are_reported_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let c = Checkpointer::start(Box::new(move |_: &[u8]| {
            counted.fetch_add(1, Ordering::SeqCst);
            Err(StorageError::Full("injected".into()))
        }))
        .unwrap();
        c.submit(b"x".to_vec());
        assert!(c.finish(), "the failure of the pending write is reported by finish");
        let c = Checkpointer::start(Box::new(|_: &[u8]| -> Result<(), StorageError> {
            Err(StorageError::Full("injected".into()))
        }))
        .unwrap();
        c.submit(b"x".to_vec());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.take_failure() {
            assert!(std::time::Instant::now() < deadline, "failure never reported");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!c.take_failure());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!c.finish());
    }
}
