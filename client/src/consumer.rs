//! The consumer: one subscription of a consumer group, with credit, batched acks, and
//! resubscription after a reconnect.
//!
//! The broker sends a subscription at most `credit` unacknowledged records; acknowledgements
//! are what free credit. So the consumer keeps acks moving: [`Consumer::ack`] gathers
//! offsets into ranges per partition and sends one `ACK` frame once
//! [`ConsumerConfig::ack_batch`] records are pending, and every [`Consumer::poll`] sends
//! whatever is pending before it waits. Replies to acks are read along with deliveries and
//! never waited for, except by [`Consumer::commit`].
//!
//! **Signs of life.** The broker takes a member that sends nothing while a record delivered
//! to it times out for gone (`IDLE_TIMEOUT`: its partitions go to the rest of the group). While
//! `poll` waits, the consumer sends a `PING` whenever nothing else went out for
//! [`HEARTBEAT_EVERY`]; an application that holds records longer than the group's ack timeout
//! (5 s by default) without calling `poll` or `ack` is taken for gone, and this consumer
//! reconnects and resubscribes on its next call.
//!
//! **After a reconnect** the consumer subscribes again with start position `committed`: the
//! group resumes at its lowest unacknowledged offsets (on a broker that lost the group, such
//! as a restarted in-memory one, that is the oldest record). An ephemeral consumer
//! ([`ConsumerConfig::ephemeral`]) subscribes again at its configured start instead: the
//! broker deleted its group with the lost connection, so there is nothing to resume. Records that were in flight are
//! delivered again, so a record can arrive twice; consumers should be idempotent by
//! (topic, partition, offset). Acks of messages received before the reconnect are dropped,
//! never sent on the new connection, where the same offsets might name other records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};
use mq_protocol::{ErrorCode, GroupKind, OffsetRange, Request, Response, StartPosition};

use crate::conn::{unexpected, Conn, Endpoints, Link};
use crate::error::{ClientError, Result};
use crate::ClientConfig;

/// Most ranges in one `ACK` frame: 4096 × 20 bytes stays far below any frame limit.
const ACK_RANGES_MAX: usize = 4096;
/// While `poll` waits, a `PING` goes out when nothing else was sent for this long: a sign of
/// life for the broker, which closes members that send nothing while their records time out
/// (`IDLE_TIMEOUT`, after the group's ack timeout, 5 s by default).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Partitions for which ranges are merged by index; a partition number above it (no topic
/// has that many) still works, unmerged.
const MERGE_PARTITIONS_MAX: usize = mq_protocol::limits::PARTITIONS_MAX as usize;

/// How a [`Consumer`] subscribes and acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Where a new group starts (ignored when the group exists).
    pub start: StartPosition,
    /// Most records in flight to this consumer (delivered, not yet acknowledged).
    pub credit: u32,
    /// Send an `ACK` frame once this many acknowledgements are pending; 0 picks a quarter
    /// of the credit, so the broker never runs dry while acks wait.
    pub ack_batch: usize,
    /// Join an ephemeral group (`SUBSCRIBE_EPHEMERAL`): the broker deletes it, with its
    /// offsets, when its last member leaves, so a group made for one look leaves nothing
    /// behind. Joining an existing group of the other kind fails with
    /// `GROUP_KIND_MISMATCH`. A broker older than group kinds answers `UNKNOWN_OPCODE`.
    pub ephemeral: bool,
}

impl Default for ConsumerConfig {
    /// Start at the committed offset, credit 1024, acks in batches of a quarter of that, a
    /// durable group.
    fn default() -> Self {
        ConsumerConfig {
            start: StartPosition::Committed,
            credit: 1024,
            ack_batch: 0,
            ephemeral: false,
        }
    }
}

impl ConsumerConfig {
    fn ack_batch_records(&self) -> usize {
        match self.ack_batch {
            0 => (self.credit as usize / 4).max(1),
            n => n,
        }
    }
}

/// One delivered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// 1 on the first delivery to the group, then 2, 3, … on redeliveries.
    pub attempt: u32,
    /// When the broker stored the record, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The record's key, if it has one.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// The connection it came on; acks of older connections are dropped.
    epoch: u64,
}

/// Counters of a [`Consumer`] since it subscribed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records received.
    pub records_received: u64,
    /// Acknowledgements sent (records).
    pub records_acked: u64,
    /// `ACK` frames sent.
    pub ack_frames: u64,
    /// Acks, nacks and rejects the broker refused (`NOT_IN_FLIGHT` after a redelivery, say).
    pub ack_errors: u64,
    /// Acks dropped because their message came on a connection since lost.
    pub stale_acks: u64,
    /// Successful reconnects (each followed by a resubscribe).
    pub reconnects: u64,
}

/// Pending acknowledgements, merged into ranges per partition.
#[derive(Debug, Default)]
struct AckBuffer {
    ranges: Vec<OffsetRange>,
    /// Per partition, 1 + the index in `ranges` of its newest range (0: none).
    newest: Vec<u32>,
    records: usize,
}

impl AckBuffer {
    fn add(&mut self, partition: u32, offset: u64) {
        self.records += 1;
        let p = partition as usize;
        if p < MERGE_PARTITIONS_MAX {
            if p >= self.newest.len() {
                self.newest.resize(p + 1, 0);
            }
            if let Some(range) = self.newest[p].checked_sub(1).map(|i| &mut self.ranges[i as usize])
            {
                if range.last.checked_add(1) == Some(offset) {
                    range.last = offset;
                    return;
                }
            }
            self.newest[p] = self.ranges.len() as u32 + 1;
        }
        self.ranges.push(OffsetRange { partition, first: offset, last: offset });
    }

    fn take(&mut self) -> Vec<OffsetRange> {
        self.newest.fill(0);
        self.records = 0;
        std::mem::take(&mut self.ranges)
    }
}

/// A member of a consumer group on one topic. See the [module docs](self).
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// use mq_client::{ClientConfig, Consumer, ConsumerConfig};
///
/// let mut consumer = Consumer::subscribe(
///     &["127.0.0.1:7420"],
///     "telemetry",
///     "collectors",
///     ClientConfig::default(),
///     ConsumerConfig::default(),
/// )?;
/// loop {
///     for message in consumer.poll(Duration::from_millis(500))? {
///         println!("{}:{} {:?}", message.partition, message.offset, message.value);
///         consumer.ack(&message)?;
///     }
/// }
/// # Ok::<(), mq_client::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Consumer {
    link: Link,
    topic: Arc<str>,
    group: String,
    config: ConsumerConfig,
    partitions: u32,
    epoch: u64,
    ready: Vec<Message>,
    acks: AckBuffer,
    /// Ack, nack and reject requests sent and not yet answered.
    unanswered: usize,
    stats: ConsumerStats,
    /// When this consumer last sent the broker anything (see [`HEARTBEAT_EVERY`]).
    last_sent: Instant,
}

impl Consumer {
    /// Connects to the first broker address that answers and joins `group` on `topic`.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], a handshake error, or the broker's refusal
    /// (`BAD_ARG` for a bad name, `TOO_MANY_GROUPS`, ...).
    pub fn subscribe<A: std::fmt::Display>(
        addrs: &[A],
        topic: &str,
        group: &str,
        client: ClientConfig,
        config: ConsumerConfig,
    ) -> Result<Consumer> {
        Consumer::open(Link::open(Endpoints::new(addrs), client)?, topic, group, config)
    }

    pub(crate) fn open(
        link: Link,
        topic: &str,
        group: &str,
        config: ConsumerConfig,
    ) -> Result<Consumer> {
        let mut consumer = Consumer {
            link,
            topic: Arc::from(topic),
            group: group.to_string(),
            config,
            partitions: 0,
            epoch: 0,
            ready: Vec::new(),
            acks: AckBuffer::default(),
            unanswered: 0,
            stats: ConsumerStats::default(),
            last_sent: Instant::now(),
        };
        let start = consumer.config.start;
        consumer.join(start)?;
        Ok(consumer)
    }

    /// The topic's partition count, as the broker reported on subscribing.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Counters since the consumer subscribed.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats { reconnects: self.link.reconnects(), ..self.stats }
    }

    /// Sends pending acks, then returns the records that arrive within `timeout` (at least
    /// one, unless the time runs out: then an empty list). Returns at once when records are
    /// already buffered.
    ///
    /// # Errors
    /// A connection error that reconnecting could not cure ([`ClientError::GaveUp`]), or a
    /// broker error that ends the subscription.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Message>> {
        let deadline = Instant::now() + timeout;
        self.guarded(|c| c.fill(deadline))?;
        Ok(std::mem::take(&mut self.ready))
    }

    /// Acknowledges one message. The ack is buffered and sent with others (see
    /// [`ConsumerConfig::ack_batch`]), at the latest on the next `poll` or `commit`.
    ///
    /// # Errors
    /// As [`Consumer::poll`], when a batch of acks is sent.
    pub fn ack(&mut self, message: &Message) -> Result<()> {
        if message.epoch != self.epoch {
            self.stats.stale_acks += 1;
            return Ok(());
        }
        self.acks.add(message.partition, message.offset);
        if self.acks.records >= self.config.ack_batch_records()
            || self.acks.ranges.len() >= ACK_RANGES_MAX
        {
            self.guarded(|c| c.send_acks())?;
        }
        Ok(())
    }

    /// Acknowledges several messages.
    ///
    /// # Errors
    /// As [`Consumer::ack`].
    pub fn ack_many<'a>(&mut self, messages: impl IntoIterator<Item = &'a Message>) -> Result<()> {
        messages.into_iter().try_for_each(|m| self.ack(m))
    }

    /// Gives a message back for redelivery after `delay` (at once for zero). Sent at once,
    /// after any pending acks.
    ///
    /// # Errors
    /// As [`Consumer::poll`].
    pub fn nack(&mut self, message: &Message, delay: Duration) -> Result<()> {
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.settle(message, |topic, group, ranges| Request::Nack {
            topic,
            group,
            delay_ms,
            ranges,
        })
    }

    /// Sends a message straight to the dead-letter topic `<topic>.dlq`, without retry.
    ///
    /// # Errors
    /// As [`Consumer::poll`].
    pub fn reject(&mut self, message: &Message) -> Result<()> {
        self.settle(message, |topic, group, ranges| Request::Reject { topic, group, ranges })
    }

    /// Sends pending acks and waits until the broker has answered every ack, nack and
    /// reject sent so far. Records that arrive meanwhile are kept for the next `poll`.
    ///
    /// # Errors
    /// As [`Consumer::poll`]; [`ClientError::Timeout`] if the answers do not come within
    /// the request timeout.
    pub fn commit(&mut self) -> Result<()> {
        self.guarded(|c| {
            c.send_acks()?;
            let timeout = c.link.config.request_timeout;
            let deadline = Instant::now() + timeout;
            while c.unanswered > 0 {
                match c.link.conn()?.recv(deadline)? {
                    Some((id, response)) => c.apply(id, response)?,
                    None => {
                        return Err(ClientError::Timeout { timeout_ms: timeout.as_millis() as u64 })
                    }
                }
            }
            Ok(())
        })
    }

    /// Changes the credit (0 pauses deliveries).
    ///
    /// # Errors
    /// As [`Consumer::poll`].
    pub fn set_credit(&mut self, credit: u32) -> Result<()> {
        self.config.credit = credit;
        let request =
            Request::Credit { topic: self.topic.to_string(), group: self.group.clone(), credit };
        self.guarded(|c| c.send_counted(&request))
    }

    /// Commits, leaves the group (what is still in flight goes to other members) and closes
    /// the connection.
    ///
    /// # Errors
    /// As [`Consumer::commit`].
    pub fn close(mut self) -> Result<()> {
        self.commit()?;
        let request =
            Request::Unsubscribe { topic: self.topic.to_string(), group: self.group.clone() };
        let timeout = self.link.config.request_timeout;
        let conn = self.link.conn()?;
        let id = conn.send(&request)?;
        conn.flush()?;
        match conn.reply_to(id, timeout)? {
            Response::Ok => Ok(()),
            other => Err(unexpected("UNSUBSCRIBE", &other)),
        }
    }

    fn settle(
        &mut self,
        message: &Message,
        make: impl Fn(String, String, Vec<OffsetRange>) -> Request,
    ) -> Result<()> {
        if message.epoch != self.epoch {
            self.stats.stale_acks += 1;
            return Ok(());
        }
        let range = OffsetRange {
            partition: message.partition,
            first: message.offset,
            last: message.offset,
        };
        let request = make(self.topic.to_string(), self.group.clone(), vec![range]);
        self.guarded(|c| {
            c.send_acks()?;
            c.send_counted(&request)
        })
    }

    /// Runs `step`; if it loses the connection, reconnects, subscribes again, and runs it
    /// again (a bounded number of times).
    fn guarded(&mut self, mut step: impl FnMut(&mut Consumer) -> Result<()>) -> Result<()> {
        let mut recoveries = 0;
        loop {
            let error = match step(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let retry = error.is_connection_lost() || matches!(error, ClientError::Protocol(_));
            recoveries += 1;
            if !retry || recoveries > 8 {
                return Err(error);
            }
            self.link.lose(&error);
            self.epoch += 1;
            self.acks.take();
            self.unanswered = 0;
            self.link.reconnect()?;
            if let Err(e) = self.join(self.rejoin_start()) {
                if !e.is_connection_lost() {
                    return Err(e);
                }
                self.link.lose(&e);
            }
        }
    }

    /// Where to start after a reconnect: a durable group resumes at its committed offsets;
    /// an ephemeral one went with the lost connection and starts anew.
    fn rejoin_start(&self) -> StartPosition {
        if self.config.ephemeral {
            self.config.start
        } else {
            StartPosition::Committed
        }
    }

    /// Subscribes on the current connection and waits for `SUBSCRIBED`.
    fn join(&mut self, start: StartPosition) -> Result<()> {
        let kind = if self.config.ephemeral { GroupKind::Ephemeral } else { GroupKind::Durable };
        let request = Request::Subscribe {
            topic: self.topic.to_string(),
            group: self.group.clone(),
            start,
            credit: self.config.credit,
            kind,
        };
        let timeout = self.link.config.request_timeout;
        let conn = self.link.conn()?;
        let id = conn.send(&request)?;
        conn.flush()?;
        match conn.reply_to(id, timeout)? {
            Response::Subscribed { partitions } => {
                self.partitions = partitions;
                debug!("subscribed to {} as {} ({partitions} partitions)", self.topic, self.group);
                Ok(())
            }
            other => Err(unexpected("SUBSCRIBE", &other)),
        }
    }

    /// Sends pending acks, then reads until records are buffered or `deadline` passes, then
    /// takes whatever else is already buffered without waiting.
    fn fill(&mut self, deadline: Instant) -> Result<()> {
        self.send_acks()?;
        while self.ready.is_empty() {
            self.heartbeat()?;
            let wake = deadline.min(Instant::now() + HEARTBEAT_EVERY);
            match self.link.conn()?.recv(wake)? {
                Some((id, response)) => self.apply(id, response)?,
                None if wake >= deadline => return Ok(()),
                None => {}
            }
        }
        while let Some((id, response)) = self.conn()?.buffered()? {
            self.apply(id, response)?;
        }
        Ok(())
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        self.link.conn()
    }

    /// Sends a `PING` if nothing was sent for [`HEARTBEAT_EVERY`]: the broker takes a member
    /// that sends nothing while its records time out for gone (`IDLE_TIMEOUT`), and a
    /// consumer waiting in `poll` is not gone. Its `PONG` is read and dropped by `apply`.
    fn heartbeat(&mut self) -> Result<()> {
        if self.last_sent.elapsed() >= HEARTBEAT_EVERY {
            let conn = self.link.conn()?;
            conn.send(&Request::Ping)?;
            conn.flush()?;
            self.last_sent = Instant::now();
        }
        Ok(())
    }

    fn send_acks(&mut self) -> Result<()> {
        if self.acks.records == 0 {
            return Ok(());
        }
        let records = self.acks.records as u64;
        let ranges = self.acks.take();
        let request =
            Request::Ack { topic: self.topic.to_string(), group: self.group.clone(), ranges };
        self.send_counted(&request)?;
        self.stats.records_acked += records;
        self.stats.ack_frames += 1;
        Ok(())
    }

    /// Sends a request whose `OK` is read later by `apply`.
    fn send_counted(&mut self, request: &Request) -> Result<()> {
        let conn = self.link.conn()?;
        conn.send(request)?;
        conn.flush()?;
        self.unanswered += 1;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn apply(&mut self, id: u32, response: Response) -> Result<()> {
        match response {
            Response::Deliver(deliver) if *deliver.topic == *self.topic => {
                self.stats.records_received += deliver.records.len() as u64;
                let epoch = self.epoch;
                self.ready.extend(deliver.records.into_iter().map(|d| Message {
                    topic: Arc::clone(&self.topic),
                    partition: d.partition,
                    offset: d.offset,
                    attempt: d.attempt,
                    timestamp_ms: d.timestamp_ms,
                    key: d.key,
                    value: d.value,
                    epoch,
                }));
            }
            Response::Deliver(deliver) => {
                debug!("DELIVER for unsubscribed topic {}", deliver.topic)
            }
            Response::Error { code, message } if id == 0 => {
                return Err(ClientError::broker(code, message));
            }
            Response::Error { code, message } => {
                self.unanswered = self.unanswered.saturating_sub(1);
                self.stats.ack_errors += 1;
                if code == ErrorCode::NOT_IN_FLIGHT {
                    debug!("ack refused: {code} {message}");
                } else {
                    warn!("ack, nack or credit refused: {code} {message}");
                }
            }
            Response::Ok => self.unanswered = self.unanswered.saturating_sub(1),
            other => debug!("ignored {} frame", other.opcode().name()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: u32, first: u64, last: u64) -> OffsetRange {
        OffsetRange { partition, first, last }
    }

    #[test]
    fn consecutive_offsets_merge_into_one_range_per_partition() {
        let mut acks = AckBuffer::default();
        for offset in 0..5 {
            acks.add(3, offset);
            acks.add(0, offset + 10);
        }
        acks.add(3, 7);
        assert_eq!(acks.records, 11);
        assert_eq!(acks.take(), vec![range(3, 0, 4), range(0, 10, 14), range(3, 7, 7)]);
        assert_eq!(acks.records, 0);
        acks.add(3, 8);
        assert_eq!(acks.take(), vec![range(3, 8, 8)], "no range survives a take");
    }

    #[test]
    fn huge_partition_numbers_do_not_allocate() {
        let mut acks = AckBuffer::default();
        acks.add(u32::MAX, u64::MAX);
        acks.add(u32::MAX, 0);
        assert!(acks.newest.is_empty());
        assert_eq!(acks.take(), vec![range(u32::MAX, u64::MAX, u64::MAX), range(u32::MAX, 0, 0)]);
    }

    #[test]
    fn default_ack_batch_is_a_quarter_of_the_credit() {
        assert_eq!(ConsumerConfig::default().ack_batch_records(), 256);
        let tiny = ConsumerConfig { credit: 1, ..ConsumerConfig::default() };
        assert_eq!(tiny.ack_batch_records(), 1);
    }
}
