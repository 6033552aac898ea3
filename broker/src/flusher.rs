//! The flusher thread: group commit that overlaps the event loop's next turn.
//!
//! With `--fsync always` on disk, the event loop appends a turn's records, asks the flusher
//! for a flush (an epoch number) and holds that turn's replies and deliveries; meanwhile it
//! reads and appends the next turn. The flusher makes everything written so far durable
//! with one `syncfs` of the data directory's file system (covering every epoch asked for
//! before it started), publishes the highest epoch done and wakes the loop, which then
//! releases the held output. A flush that fails marks its epochs failed: their `PUBLISHED`
//! replies become `STORAGE_ERROR`.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use log::warn;
use mio::Waker;

#[derive(Debug, Default)]
struct Shared {
    /// Highest epoch whose flush has finished (successfully or not).
    done: AtomicU64,
    /// Highest epoch whose flush failed, with the error, until taken.
    failed: Mutex<Option<(u64, String)>>,
}

/// Handle of the flusher thread.
#[derive(Debug)]
pub struct Flusher {
    requests: Option<mpsc::Sender<u64>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread; `file` is any file on the file system to flush.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(file: File, waker: Arc<Waker>) -> io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<u64>();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new().name("mqd-flusher".into()).spawn(move || {
            while let Ok(mut epoch) = rx.recv() {
                // Requests that queued up while the last flush ran are covered by this one.
                while let Ok(later) = rx.try_recv() {
                    epoch = epoch.max(later);
                }
                if let Err(e) = rustix::fs::syncfs(&file) {
                    warn!("flush of epoch {epoch} failed: {e}");
                    *state.failed.lock().expect("flusher lock") = Some((epoch, e.to_string()));
                }
                state.done.store(epoch, Ordering::Release);
                let _ = waker.wake();
            }
        })?;
        Ok(Flusher { requests: Some(tx), shared, thread: Some(thread) })
    }

    /// Asks for everything written so far to be flushed, as `epoch` (increasing).
    pub fn request(&self, epoch: u64) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(epoch);
        }
    }

    /// Highest epoch whose flush has finished.
    pub fn done(&self) -> u64 {
        self.shared.done.load(Ordering::Acquire)
    }

    /// The highest failed epoch and its error, if a flush failed since the last call.
    pub fn take_failure(&self) -> Option<(u64, String)> {
        self.shared.failed.lock().expect("flusher lock").take()
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
