//! The producer: batches records per topic, pipelines `PUBLISH` frames, and reports where
//! each record landed.
//!
//! [`Producer::send`] appends a record to its topic's open batch, encoding it straight into
//! the batch's frame (no intermediate copy). A batch is sealed and written to the socket
//! when it reaches [`ProducerConfig::batch_records`] or [`ProducerConfig::batch_bytes`], or
//! when [`ProducerConfig::linger`] has passed since its first record, checked on the next
//! call to `send` (every 16th once a batch holds 16 records), [`Producer::poll`] or
//! [`Producer::flush`] (there is no background thread). Up to [`ProducerConfig::max_in_flight_batches`] sealed batches wait for their
//! `PUBLISHED` reply at once; the next one blocks until a reply frees a slot.
//!
//! Every `send` returns a sequence number, and every sequence number later comes back
//! exactly once as an [`Outcome`] from `poll`, `flush` or `publish_batch`: a [`Placement`]
//! (partition and offset) or a typed error. Nothing is dropped silently.
//!
//! **Delivery guarantee: at least once.** When the connection is lost, the producer
//! reconnects (with backoff) and sends again every batch that had no reply. If the broker had
//! stored such a batch before the connection broke, its records are stored twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use mq_protocol::limits::FRAME_HEADER_BYTES;
use mq_protocol::names::{validate_key, validate_name};
use mq_protocol::{Opcode, Placement, ProtoError, Record, Response, MAGIC, VERSION};

use crate::conn::{Endpoints, Link};
use crate::error::{ClientError, Result};
use crate::ClientConfig;

/// How a [`Producer`] batches and pipelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// A batch is sent once it holds this many records.
    pub batch_records: usize,
    /// A batch is sent once its frame body reaches this many bytes (never more than the
    /// broker's frame limit).
    pub batch_bytes: usize,
    /// A batch is sent once its first record has waited this long (checked on the next
    /// call). Zero sends every record in its own frame at once.
    pub linger: Duration,
    /// Most batches sent and not yet answered; one more blocks until a reply comes.
    pub max_in_flight_batches: usize,
}

impl Default for ProducerConfig {
    /// 256 records or 128 KiB per batch, 1 ms linger, 16 batches in flight.
    fn default() -> Self {
        ProducerConfig {
            batch_records: 256,
            batch_bytes: 128 * 1024,
            linger: Duration::from_millis(1),
            max_in_flight_batches: 16,
        }
    }
}

/// What became of one record handed to [`Producer::send`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The sequence number `send` returned.
    pub seq: u64,
    /// Where the broker stored it, or why it was not stored.
    pub result: Result<Placement>,
}

/// Counters of a [`Producer`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Records handed to `send` and accepted.
    pub records_sent: u64,
    /// Records with a placement.
    pub records_placed: u64,
    /// Records with an error outcome.
    pub records_failed: u64,
    /// `PUBLISH` frames written, resends included.
    pub frames_sent: u64,
    /// Frames sent again after a reconnect.
    pub frames_resent: u64,
    /// Successful reconnects.
    pub reconnects: u64,
}

/// A batch still taking records.
#[derive(Debug)]
struct OpenBatch {
    topic: String,
    frame: BytesMut,
    count_at: usize,
    seqs: Vec<u64>,
    opened: Instant,
}

/// A batch sent and waiting for its `PUBLISHED`.
#[derive(Debug)]
struct InFlight {
    request_id: u32,
    frame: BytesMut,
    seqs: Vec<u64>,
}

/// Bytes one record adds to a `PUBLISH` body besides its key and value.
const RECORD_FRAMING_BYTES: usize = 2 + 4;

/// Records between two linger checks of a batch that already holds this many: under load
/// a batch fills long before its linger, and the clock need not be read for every record.
/// At low rates (fewer records per linger) every send looks at the clock.
const LINGER_CHECK_EVERY: usize = 16;

/// How often one call may reconnect and resend before it reports failure, so that a broker
/// that accepts connections but drops them at once cannot keep a call busy for ever.
const RECOVERIES_PER_CALL_MAX: u32 = 8;

/// Publishes records in batches over one connection. See the [module docs](self).
///
/// # Examples
/// ```no_run
/// use mq_client::{ClientConfig, Producer, ProducerConfig};
///
/// let mut producer =
///     Producer::connect(&["127.0.0.1:7420"], ClientConfig::default(), ProducerConfig::default())?;
/// for i in 0..1000 {
///     producer.send("telemetry", Some(b"gpu-0"), format!("reading {i}").as_bytes())?;
/// }
/// for outcome in producer.flush()? {
///     let placement = outcome.result?;
///     println!("record {} at {}:{}", outcome.seq, placement.partition, placement.offset);
/// }
/// # Ok::<(), mq_client::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Producer {
    link: Link,
    config: ProducerConfig,
    frame_body_bytes_max: usize,
    open: Vec<OpenBatch>,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    outcomes: Vec<Outcome>,
    spare_frames: Vec<BytesMut>,
    spare_seqs: Vec<Vec<u64>>,
    stats: ProducerStats,
}

impl Producer {
    /// Connects to the first broker address that answers.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] or a handshake error.
    pub fn connect<A: std::fmt::Display>(
        addrs: &[A],
        client: ClientConfig,
        config: ProducerConfig,
    ) -> Result<Producer> {
        Producer::open(Link::open(Endpoints::new(addrs), client)?, config)
    }

    pub(crate) fn open(mut link: Link, config: ProducerConfig) -> Result<Producer> {
        let frame_body_bytes_max = link.conn()?.frame_body_bytes_max as usize;
        Ok(Producer {
            link,
            config,
            frame_body_bytes_max,
            open: Vec::new(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            outcomes: Vec::new(),
            spare_frames: Vec::new(),
            spare_seqs: Vec::new(),
            stats: ProducerStats::default(),
        })
    }

    /// Counters since the producer was created.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats { reconnects: self.link.reconnects(), ..self.stats }
    }

    /// Records sent whose outcome is not known yet.
    pub fn pending(&self) -> usize {
        self.open.iter().map(|b| b.seqs.len()).sum::<usize>()
            + self.in_flight.iter().map(|b| b.seqs.len()).sum::<usize>()
    }

    /// Largest key + value of one record the broker accepts.
    pub fn record_bytes_max(&self) -> usize {
        self.frame_body_bytes_max.saturating_sub(crate::conn::RECORD_OVERHEAD_BYTES as usize)
    }

    /// When the oldest open batch's linger runs out, if any batch is open: a caller that
    /// sleeps between sends should call [`Producer::poll`] by then.
    pub fn linger_deadline(&self) -> Option<Instant> {
        self.open.iter().map(|b| b.opened + self.config.linger).min()
    }

    /// Adds one record to `topic`'s batch and returns its sequence number. The batch may be
    /// sent now (it is full or its linger expired), which may block while
    /// `max_in_flight_batches` batches await replies.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] for a bad topic name or key, or a record larger than
    /// [`Producer::record_bytes_max`]: that record is not sent and gets no sequence number.
    /// A connection error that reconnecting could not cure ([`ClientError::GaveUp`]); the
    /// records it concerns get error outcomes.
    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<u64> {
        let key = key.unwrap_or_default();
        if !key.is_empty() {
            validate_key(key).map_err(ClientError::InvalidRequest)?;
        }
        let record_bytes = key.len() + value.len();
        if record_bytes > self.record_bytes_max() {
            return Err(ClientError::InvalidRequest(ProtoError::BadArg(format!(
                "record of {record_bytes} bytes exceeds the broker's limit of {} bytes",
                self.record_bytes_max()
            ))));
        }
        let index = self.batch_for(topic, record_bytes + RECORD_FRAMING_BYTES)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.records_sent += 1;
        let batch = &mut self.open[index];
        put_record(&mut batch.frame, key, value);
        batch.seqs.push(seq);
        let body_bytes = batch.frame.len() - FRAME_HEADER_BYTES;
        let records = batch.seqs.len();
        // Reading the clock costs as much as appending a record, so a batch that fills fast
        // (many records per linger) looks at it only every few records.
        let look_at_clock =
            records < LINGER_CHECK_EVERY || records.is_multiple_of(LINGER_CHECK_EVERY);
        let full = records >= self.config.batch_records
            || body_bytes >= self.config.batch_bytes
            || self.config.linger.is_zero()
            || (look_at_clock && batch.opened.elapsed() >= self.config.linger);
        if full {
            self.seal(index)?;
        }
        Ok(seq)
    }

    /// Sends batches whose linger expired and collects the replies that have arrived,
    /// without waiting for more. Returns every outcome known since the last call.
    ///
    /// # Errors
    /// As [`Producer::send`].
    pub fn poll(&mut self) -> Result<Vec<Outcome>> {
        let now = Instant::now();
        while let Some(index) = self.open.iter().position(|b| now >= b.opened + self.config.linger)
        {
            self.seal(index)?;
        }
        self.guarded(|p| p.read_ready())?;
        Ok(std::mem::take(&mut self.outcomes))
    }

    /// Sends every open batch and waits for every reply. Returns every outcome known since
    /// the last call.
    ///
    /// # Errors
    /// As [`Producer::send`]; on error, outcomes gathered so far stay for the next call.
    pub fn flush(&mut self) -> Result<Vec<Outcome>> {
        while !self.open.is_empty() {
            self.seal(0)?;
        }
        while !self.in_flight.is_empty() {
            self.guarded(|p| p.read_one())?;
        }
        Ok(std::mem::take(&mut self.outcomes))
    }

    /// Publishes `records` to `topic` and waits for all of them: the simple blocking call.
    /// Outcomes of other records sent before stay for the next `poll` or `flush`.
    ///
    /// # Errors
    /// The first record's error, if any record failed (some may have been stored).
    pub fn publish_batch(&mut self, topic: &str, records: &[Record]) -> Result<Vec<Placement>> {
        let first = self.next_seq;
        for record in records {
            self.send(topic, record.key.as_deref(), &record.value)?;
        }
        let all = self.flush()?;
        let mut mine: Vec<Option<Result<Placement>>> = vec![None; records.len()];
        for outcome in all {
            match outcome.seq.checked_sub(first) {
                Some(i) if (i as usize) < mine.len() => mine[i as usize] = Some(outcome.result),
                _ => self.outcomes.push(outcome),
            }
        }
        mine.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::UnexpectedReply("no outcome".into()))))
            .collect()
    }

    /// The index in `open` of `topic`'s batch, with room for `extra` more body bytes.
    fn batch_for(&mut self, topic: &str, extra: usize) -> Result<usize> {
        if let Some(index) = self.open.iter().position(|b| b.topic == topic) {
            let body_bytes = self.open[index].frame.len() - FRAME_HEADER_BYTES;
            if body_bytes + extra <= self.frame_body_bytes_max {
                return Ok(index);
            }
            self.seal(index)?;
        }
        validate_name("topic", topic).map_err(ClientError::InvalidRequest)?;
        let mut frame = self.spare_frames.pop().unwrap_or_default();
        frame.clear();
        frame.reserve(self.config.batch_bytes.min(self.frame_body_bytes_max) + 256);
        let count_at = begin_publish(&mut frame, topic);
        let mut seqs = self.spare_seqs.pop().unwrap_or_default();
        seqs.clear();
        let opened = Instant::now();
        self.open.push(OpenBatch { topic: topic.to_string(), frame, count_at, seqs, opened });
        Ok(self.open.len() - 1)
    }

    /// Closes batch `index`, sends it, and waits while too many batches are in flight.
    fn seal(&mut self, index: usize) -> Result<()> {
        let OpenBatch { mut frame, count_at, seqs, .. } = self.open.swap_remove(index);
        finish_publish(&mut frame, count_at, seqs.len() as u32);
        self.in_flight.push_back(InFlight { request_id: 0, frame, seqs });
        self.guarded(|p| p.write_last())?;
        while self.in_flight.len() >= self.config.max_in_flight_batches.max(1) {
            self.guarded(|p| p.read_one())?;
        }
        Ok(())
    }

    /// Runs `step`; if it loses the connection, reconnects, resends what had no reply and
    /// runs it again.
    fn guarded(&mut self, mut step: impl FnMut(&mut Producer) -> Result<()>) -> Result<()> {
        let mut recoveries = 0;
        loop {
            let error = match step(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            recoveries += 1;
            let retry = error.is_connection_lost()
                || matches!(error, ClientError::Protocol(_) | ClientError::UnexpectedReply(_));
            self.link.lose(&error);
            if !retry || recoveries > RECOVERIES_PER_CALL_MAX {
                self.fail_in_flight(&error);
                return Err(error);
            }
            if let Err(e) = self.reconnect_and_resend() {
                if !e.is_connection_lost() {
                    self.link.lose(&e);
                    self.fail_in_flight(&e);
                    return Err(e);
                }
            }
        }
    }

    fn reconnect_and_resend(&mut self) -> Result<()> {
        let conn = self.link.reconnect()?;
        self.frame_body_bytes_max = conn.frame_body_bytes_max as usize;
        for batch in self.in_flight.iter_mut() {
            batch.request_id = conn.next_id();
            batch.frame[8..12].copy_from_slice(&batch.request_id.to_be_bytes());
            conn.write_frames(&batch.frame)?;
            self.stats.frames_sent += 1;
            self.stats.frames_resent += 1;
        }
        Ok(())
    }

    /// Writes the newest in-flight batch.
    fn write_last(&mut self) -> Result<()> {
        let conn = self.link.conn()?;
        let batch = self.in_flight.back_mut().expect("a batch was just queued");
        if batch.request_id != 0 {
            return Ok(()); // a reconnect already resent it
        }
        batch.request_id = conn.next_id();
        batch.frame[8..12].copy_from_slice(&batch.request_id.to_be_bytes());
        conn.write_frames(&batch.frame)?;
        self.stats.frames_sent += 1;
        Ok(())
    }

    /// Waits for one reply and applies it.
    fn read_one(&mut self) -> Result<()> {
        let timeout = self.link.config.request_timeout;
        let deadline = Instant::now() + timeout;
        match self.link.conn()?.recv(deadline)? {
            Some((id, response)) => self.apply(id, response),
            None => Err(ClientError::Timeout { timeout_ms: timeout.as_millis() as u64 }),
        }
    }

    /// Applies every reply that has already arrived.
    fn read_ready(&mut self) -> Result<()> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        while let Some((id, response)) = self.link.conn()?.try_recv()? {
            self.apply(id, response)?;
        }
        Ok(())
    }

    fn apply(&mut self, id: u32, response: Response) -> Result<()> {
        if let Response::Error { code, message } = &response {
            if id == 0 {
                return Err(ClientError::broker(*code, message.clone()));
            }
        }
        if matches!(response, Response::Deliver(_)) {
            return Ok(()); // no subscription on this connection; nothing to do with it
        }
        let Some(pos) = self.in_flight.iter().position(|b| b.request_id == id) else {
            return Err(ClientError::UnexpectedReply(format!("reply to unknown request {id}")));
        };
        let batch = self.in_flight.remove(pos).expect("position is in range");
        match response {
            Response::Published(placements) if placements.len() == batch.seqs.len() => {
                self.stats.records_placed += placements.len() as u64;
                let outcomes = batch.seqs.iter().zip(placements);
                self.outcomes.extend(outcomes.map(|(&seq, p)| Outcome { seq, result: Ok(p) }));
            }
            Response::Error { code, message } => {
                self.fail_batch(&batch, &ClientError::broker(code, message));
            }
            other => {
                let what =
                    format!("PUBLISH of {} records answered with {other:?}", batch.seqs.len());
                self.fail_batch(&batch, &ClientError::UnexpectedReply(what));
            }
        }
        self.recycle(batch);
        Ok(())
    }

    fn fail_batch(&mut self, batch: &InFlight, error: &ClientError) {
        self.stats.records_failed += batch.seqs.len() as u64;
        let failed = batch.seqs.iter().map(|&seq| Outcome { seq, result: Err(error.clone()) });
        self.outcomes.extend(failed);
    }

    /// Every batch without a reply gets `error` as its records' outcome.
    fn fail_in_flight(&mut self, error: &ClientError) {
        while let Some(batch) = self.in_flight.pop_front() {
            self.fail_batch(&batch, error);
            self.recycle(batch);
        }
    }

    fn recycle(&mut self, batch: InFlight) {
        if self.spare_frames.len() < self.config.max_in_flight_batches {
            self.spare_frames.push(batch.frame);
            self.spare_seqs.push(batch.seqs);
        }
    }
}

/// Starts a `PUBLISH` frame for `topic` in `frame` (request id and lengths left at 0) and
/// returns where its record count goes.
///
/// # Format
/// Header (12 bytes: `a7 01 10 00`, `body_len u32`, `request_id u32`), then `topic str16`,
/// `count u32`, then per record `key bytes16, value bytes32` (`spec/wire.md`, `PUBLISH`).
fn begin_publish(frame: &mut BytesMut, topic: &str) -> usize {
    frame.put_u8(MAGIC);
    frame.put_u8(VERSION);
    frame.put_u8(Opcode::Publish as u8);
    frame.put_u8(0);
    frame.put_u32(0);
    frame.put_u32(0);
    frame.put_u16(topic.len() as u16);
    frame.put_slice(topic.as_bytes());
    let count_at = frame.len();
    frame.put_u32(0);
    count_at
}

/// Appends one record; a key of length 0 means no key.
fn put_record(frame: &mut BytesMut, key: &[u8], value: &[u8]) {
    frame.put_u16(key.len() as u16);
    frame.put_slice(key);
    frame.put_u32(value.len() as u32);
    frame.put_slice(value);
}

/// Fills in the body length and record count.
fn finish_publish(frame: &mut BytesMut, count_at: usize, count: u32) {
    let body_len = (frame.len() - FRAME_HEADER_BYTES) as u32;
    frame[4..8].copy_from_slice(&body_len.to_be_bytes());
    frame[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame the producer builds by hand must be byte for byte what the protocol
    /// crate's encoder makes of the same request.
    #[test]
    fn hand_built_publish_frames_match_the_protocol_encoder() {
        let records = vec![
            Record { key: Some(bytes::Bytes::from_static(b"gpu-0")), value: "hello".into() },
            Record { key: None, value: "hi".into() },
        ];
        let mut expected = BytesMut::new();
        let request = mq_protocol::Request::Publish { topic: "telemetry".into(), records };
        request.encode(7, u32::MAX, &mut expected).unwrap();

        let mut frame = BytesMut::new();
        let count_at = begin_publish(&mut frame, "telemetry");
        put_record(&mut frame, b"gpu-0", b"hello");
        put_record(&mut frame, b"", b"hi");
        finish_publish(&mut frame, count_at, 2);
        frame[8..12].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(frame, expected);
    }
}
