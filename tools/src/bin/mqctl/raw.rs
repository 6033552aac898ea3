//! `mqctl raw`: a text-dialect session, like `nc`. Lines from stdin go to the broker as
//! typed; everything the broker sends goes to stdout. Works with a pipe as well as a
//! terminal: once stdin ends, the session waits for the broker's answers and ends when the
//! broker has been quiet for a moment (or closed, or `linger` passed).
//!
//! The write half is not closed at the end of stdin: a broker that sees end of stream
//! closes at once, and may drop answers to the last requests it read with it.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// After stdin ends, the session ends once the broker has sent nothing for this long.
const QUIET: Duration = Duration::from_millis(250);

/// Runs the session until the broker closes, or stdin has ended and the broker is quiet,
/// or `linger` after stdin ends.
///
/// # Errors
/// Reading stdin failed.
pub fn run(stream: TcpStream, linger: Duration) -> io::Result<()> {
    let started = Instant::now();
    let last_output_ms = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let mut reader = stream.try_clone()?;
    {
        let (last_output_ms, closed) = (Arc::clone(&last_output_ms), Arc::clone(&closed));
        thread::spawn(move || {
            let mut stdout = io::stdout();
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                last_output_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if stdout.write_all(&chunk[..n]).and_then(|()| stdout.flush()).is_err() {
                    break;
                }
            }
            closed.store(true, Ordering::Relaxed);
        });
    }
    let mut writer = stream;
    for line in io::stdin().lock().split(b'\n') {
        let mut line = line?;
        line.push(b'\n');
        if closed.load(Ordering::Relaxed) || writer.write_all(&line).is_err() {
            break; // the broker closed; the reader prints its last words
        }
    }
    let input_end = Instant::now();
    while !closed.load(Ordering::Relaxed) && input_end.elapsed() < linger {
        thread::sleep(Duration::from_millis(10));
        let last = started + Duration::from_millis(last_output_ms.load(Ordering::Relaxed));
        if input_end.elapsed() >= QUIET && last.elapsed() >= QUIET {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    Ok(())
}
