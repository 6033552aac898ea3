//! A reader that bounds the length of a line before the CSV parser sees it, so that the
//! streamer's memory stays within a stated figure whatever the input.
//!
//! The `csv` crate grows its record buffer to hold whatever row it is given: a 50 MB file
//! without a newline took 464 MB of RSS as a header, a 50 MB data row 120 to 152 MB (it was
//! measured, then skipped as too large), and `--file` naming `/dev/zero` grew until the
//! allocator aborted. Here each physical line is gathered into a buffer of at most `max`
//! bytes first: a line that fits is handed on whole; a longer one is dropped as it is read,
//! up to its end, and replaced by a comment line (which the parser skips) while its line
//! number and length are queued for [`LineBound::take_skipped`]. The first line is the
//! header: past the bound it is an error ([`HEADER_TOO_LONG`]), since nothing after it
//! could be read.
//!
//! The bound is per physical line: a quoted cell spanning lines is bounded per line, and a
//! long line inside one breaks that row's quoting (it is an unusual input for telemetry).
//! Memory: the line buffer (`max`), the read buffer ([`READ_BUFFER_BYTES`]) and the
//! parser's record (at most `max`), about 2 × `max` + 64 KiB in all.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};

/// The read buffer under the line buffer.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// What stands in for a skipped line: a comment, so the parser's line count stays right.
const MARKER: &[u8] = b"#row-too-large\n";
/// Skipped lines remembered before they are taken; beyond, only counted (a file of nothing
/// but long lines must not grow this queue). The parser reads at most its 8 KiB buffer
/// ahead, about 550 markers, so the queue is drained long before it is full.
const SKIPPED_QUEUE_MAX: usize = 1024;
/// The message of the error for a header past the bound.
pub const HEADER_TOO_LONG: &str = "the header row is longer than the row limit";

/// A line that was too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number in the file.
    pub line: u64,
    /// Its length in bytes, without the line ending.
    pub bytes: u64,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct LineBound<R> {
    inner: BufReader<R>,
    max: usize,
    /// The line being handed out, and how much of it was.
    ready: Vec<u8>,
    ready_at: usize,
    /// Lines completed (handed out or skipped).
    lines: u64,
    skipped: VecDeque<SkippedLine>,
    /// Long lines not queued because the queue was full.
    skipped_uncounted: u64,
}

impl<R: Read> LineBound<R> {
    /// Bounds the lines of `inner` to `max` bytes each (line ending excluded).
    pub fn new(inner: R, max: usize) -> LineBound<R> {
        LineBound {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, inner),
            max,
            ready: Vec::new(),
            ready_at: 0,
            lines: 0,
            skipped: VecDeque::new(),
            skipped_uncounted: 0,
        }
    }

    /// The oldest long line not taken yet; one skipped while the queue was full comes
    /// last, with line and length 0 (not remembered).
    pub fn take_skipped(&mut self) -> Option<SkippedLine> {
        if let Some(skipped) = self.skipped.pop_front() {
            return Some(skipped);
        }
        if self.skipped_uncounted > 0 {
            self.skipped_uncounted -= 1;
            return Some(SkippedLine { line: 0, bytes: 0 });
        }
        None
    }

    /// Gathers the next line into `ready` (or the marker for a long one); false at the end.
    fn next_line(&mut self) -> io::Result<bool> {
        self.ready.clear();
        self.ready_at = 0;
        let mut dropped: u64 = 0;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                // The end of the input: a last line without a newline.
                if dropped > 0 {
                    return self.skip(dropped).map(|()| true);
                }
                return Ok(!self.ready.is_empty());
            }
            let newline = chunk.iter().position(|&b| b == b'\n');
            let take = newline.map_or(chunk.len(), |i| i + 1);
            let content = newline.map_or(take, |i| i);
            if dropped == 0 && self.ready.len() + content <= self.max {
                self.ready.extend_from_slice(&chunk[..take]);
            } else {
                if self.lines == 0 {
                    // The header: refuse at once, not at its end (`/dev/zero` has none).
                    return Err(io::Error::new(io::ErrorKind::InvalidData, HEADER_TOO_LONG));
                }
                dropped += (self.ready.len() + content) as u64;
                self.ready.clear();
            }
            self.inner.consume(take);
            if newline.is_some() {
                if dropped > 0 {
                    return self.skip(dropped).map(|()| true);
                }
                self.lines += 1;
                return Ok(true);
            }
        }
    }

    /// Records a long line of `bytes` and puts the marker in its place.
    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        self.lines += 1;
        if self.lines == 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, HEADER_TOO_LONG));
        }
        if self.skipped.len() < SKIPPED_QUEUE_MAX {
            self.skipped.push_back(SkippedLine { line: self.lines, bytes });
        } else {
            self.skipped_uncounted += 1;
        }
        self.ready.clear();
        self.ready.extend_from_slice(MARKER);
        Ok(())
    }
}

impl<R: Read> Read for LineBound<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if self.ready_at == self.ready.len() && !self.next_line()? {
                break;
            }
            let n = (self.ready.len() - self.ready_at).min(out.len() - written);
            out[written..written + n].copy_from_slice(&self.ready[self.ready_at..][..n]);
            self.ready_at += n;
            written += n;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], max: usize) -> (io::Result<Vec<u8>>, Vec<SkippedLine>) {
        read_all_from(input, max)
    }

    fn read_all_from(input: impl Read, max: usize) -> (io::Result<Vec<u8>>, Vec<SkippedLine>) {
        let mut bound = LineBound::new(input, max);
        let mut out = Vec::new();
        let result = bound.read_to_end(&mut out).map(|_| out);
        let mut skipped = Vec::new();
        while let Some(s) = bound.take_skipped() {
            skipped.push(s);
        }
        (result, skipped)
    }

    #[test]
    fn lines_within_the_bound_pass_unchanged() {
        let input = b"h1,h2\na,b\r\nccc,d\nlast";
        let (out, skipped) = read_all(input, 5);
        assert_eq!(out.unwrap(), input);
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_long_line_becomes_a_comment_and_is_reported_with_its_line_and_length() {
        let long = "x".repeat(100_000);
        let input = format!("h\nshort\n{long}\nafter\n{long}");
        let (out, skipped) = read_all(input.as_bytes(), 10);
        assert_eq!(out.unwrap(), b"h\nshort\n#row-too-large\nafter\n#row-too-large\n");
        assert_eq!(
            skipped,
            [SkippedLine { line: 3, bytes: 100_000 }, SkippedLine { line: 5, bytes: 100_000 }]
        );
    }

    #[test]
    fn a_header_past_the_bound_is_an_error() {
        let input = "h".repeat(1000);
        let (out, _) = read_all(input.as_bytes(), 10);
        let e = out.unwrap_err();
        assert_eq!(e.to_string(), HEADER_TOO_LONG);
        // An endless header is refused as soon as it passes the bound.
        let (out, _) = read_all_from(io::repeat(b'h'), 10);
        let e = out.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), HEADER_TOO_LONG);
    }

    #[test]
    fn an_endless_line_is_dropped_as_it_is_read_without_growing() {
        // 64 MiB of one line through a 1 KiB bound: the buffers stay at their sizes.
        let endless = io::repeat(b'a').take(64 * 1024 * 1024);
        let mut bound = LineBound::new(b"h\n".chain(endless), 1024);
        let mut out = Vec::new();
        bound.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"h\n#row-too-large\n");
        assert!(bound.ready.capacity() <= 64 * 1024, "{}", bound.ready.capacity());
        assert_eq!(bound.take_skipped().unwrap().bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn the_skipped_queue_is_bounded_and_the_rest_counted() {
        let mut input = b"h\n".to_vec();
        for _ in 0..SKIPPED_QUEUE_MAX + 5 {
            input.extend_from_slice(b"toolong\n");
        }
        let mut bound = LineBound::new(&input[..], 3);
        std::io::copy(&mut bound, &mut io::sink()).unwrap();
        let all: Vec<_> = std::iter::from_fn(|| bound.take_skipped()).collect();
        assert_eq!(all.len(), SKIPPED_QUEUE_MAX + 5);
        assert_eq!(all[SKIPPED_QUEUE_MAX - 1].line, SKIPPED_QUEUE_MAX as u64 + 1);
        assert_eq!(all[SKIPPED_QUEUE_MAX], SkippedLine { line: 0, bytes: 0 });
    }
}
