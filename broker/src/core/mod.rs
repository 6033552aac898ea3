//! The broker core: topics, consumer groups and at-least-once delivery, with no I/O and no
//! clock of its own.
//!
//! The event loop feeds it requests, connects, disconnects and the current time ([`Now`]);
//! the core answers with [`Output`]s (replies, deliveries, closes) that the event loop encodes
//! and writes. Tests drive it directly with fake time, no sockets and no sleeps.

mod checkpoint;
mod group;
mod lifecycle;
mod stats;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use log::{info, warn};
use mq_protocol::limits::{NAME_BYTES_MAX, PARTITIONS_MAX};
use mq_protocol::{
    CreateTopic, ErrorCode, GroupKind, OffsetRange, Placement, Record, Request, Response,
    StartPosition,
};

use crate::storage::{Retention, Storage, StorageError, TopicMeta};
use group::{DeadLetter, Group, PumpLimits, RangeError};
use topic::Topic;

/// A connection's broker-wide id (never reused, unlike socket tokens).
pub type ConnId = u64;

/// Suffix of dead-letter topics.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The current time, as the event loop read it: monotonic for timers, wall for timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub mono: Instant,
    /// Wall-clock milliseconds since the Unix epoch, for record timestamps and retention.
    pub wall_ms: u64,
}

impl Now {
    /// The real current time.
    pub fn real() -> Now {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now { mono: Instant::now(), wall_ms }
    }
}

/// What the core asks the event loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `response` on `conn` (request id 0 for pushes).
    Send {
        /// Connection.
        conn: ConnId,
        /// Request id to echo.
        request_id: u32,
        /// The reply or push.
        response: Response,
    },
    /// Send an error, then close `conn` once its buffered output is written.
    Close {
        /// Connection.
        conn: ConnId,
        /// Why.
        code: ErrorCode,
        /// Detail for the peer and the log.
        message: String,
    },
}

/// Settings of the core, each with its unit.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Partitions of an auto-created topic.
    pub partitions_default: u32,
    /// Most partitions a topic may have.
    pub partitions_max: u32,
    /// Most topics.
    pub topics_max: usize,
    /// Most (group, topic) pairs.
    pub groups_max: usize,
    /// Default acknowledgement timeout.
    pub ack_timeout: Duration,
    /// Acknowledgement timeout per group name, overriding the default.
    pub group_ack_timeouts: HashMap<String, Duration>,
    /// Deliveries of one record before it is dead-lettered.
    pub max_deliveries: u32,
    /// Highest credit a subscription may ask for (records in flight per member).
    pub credit_max: u32,
    /// Default retention of new topics.
    pub retention: Retention,
    /// Largest frame body, bytes: bounds DELIVER batches and record sizes.
    pub frame_body_bytes_max: u32,
    /// Longest text line, bytes (reported by INFO).
    pub line_bytes_max: usize,
    /// Shared secret required as the first request, if set.
    pub auth_token: Option<String>,
    /// Deadline for `AUTH` after connecting.
    pub auth_timeout: Duration,
    /// A connection that sent no request for this long is closed; zero: never.
    pub idle_timeout: Duration,
    /// A durable group without members for this long is deleted; zero: never.
    pub group_expiry: Duration,
    /// Text for INFO.
    pub storage_name: String,
    /// Text for INFO.
    pub fsync_name: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            partitions_default: 16,
            partitions_max: 1024,
            topics_max: 1024,
            groups_max: 4096,
            ack_timeout: Duration::from_secs(5),
            group_ack_timeouts: HashMap::new(),
            max_deliveries: 5,
            credit_max: 65_536,
            retention: Retention::default(),
            frame_body_bytes_max: mq_protocol::limits::FRAME_BODY_BYTES_MAX_DEFAULT,
            line_bytes_max: mq_protocol::limits::LINE_BYTES_MAX_DEFAULT,
            auth_token: None,
            auth_timeout: Duration::from_secs(2),
            idle_timeout: Duration::ZERO,
            group_expiry: GROUP_EXPIRY_DEFAULT,
            storage_name: "memory".into(),
            fsync_name: "none".into(),
        }
    }
}

/// Longest header line a dead letter gets in front of its value:
/// `DLQ <topic> <partition> <offset> <attempts> <reason>\n`.
pub const DLQ_HEADER_BYTES_MAX: usize = 4 + NAME_BYTES_MAX + 1 + 10 + 1 + 20 + 1 + 10 + 1 + 16 + 1;

/// Bytes of DELIVER framing around a record's key and value at most: the per-record fields
/// plus the topic, plus room for a dead-letter header. A record larger than the frame limit
/// minus this could never be delivered (from its topic or its `.dlq`), so it is refused at
/// publish.
pub const DELIVER_OVERHEAD_BYTES: usize =
    12 + 2 + NAME_BYTES_MAX + 4 + 4 + 8 + 4 + 8 + 2 + 4 + 64 + DLQ_HEADER_BYTES_MAX;

/// Default group expiry: 7 days, as Kafka's `offsets.retention.minutes`. Long enough that a
/// consumer stopped over a long weekend resumes where it was.
pub const GROUP_EXPIRY_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most records in one DELIVER frame.
pub const DELIVER_RECORDS_MAX: usize = 1024;

#[derive(Debug)]
struct ConnState {
    peer: String,
    connected_at: Instant,
    authed: bool,
    paused: bool,
    /// (topic, group) of each subscription.
    subs: Vec<(String, String)>,
    /// When it last sent a request (any request counts as a sign of life).
    last_request: Instant,
}

/// The broker's state machine.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    storage: Box<dyn Storage>,
    topics: BTreeMap<String, Topic>,
    /// Keyed by (topic, group).
    groups: BTreeMap<(String, String), Group>,
    conns: HashMap<ConnId, ConnState>,
    outputs: Vec<Output>,
    started: Instant,
    counters: stats::BrokerCounters,
    /// Storage errors since the last successful sync, for HEALTH.
    storage_error: Option<String>,
    /// The checkpoint last written, to skip writing an unchanged one.
    last_checkpoint: Vec<u8>,
}

type Reply = Result<Response, (ErrorCode, String)>;

impl Core {
    /// A core over `storage`, with the topics and group offsets it already holds.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub fn new(
        config: CoreConfig,
        mut storage: Box<dyn Storage>,
        now: Now,
    ) -> Result<Core, StorageError> {
        let (loaded, checkpoint) = storage.load()?;
        let mut core = Core {
            config,
            storage,
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            conns: HashMap::new(),
            outputs: Vec::new(),
            started: now.mono,
            counters: stats::BrokerCounters::default(),
            storage_error: None,
            last_checkpoint: Vec::new(),
        };
        for (name, meta, logs) in loaded {
            let retention = Retention { bytes: meta.retention_bytes, ms: meta.retention_ms };
            let records: u64 = logs.iter().map(|l| l.next_offset() - l.oldest_offset()).sum();
            info!("loaded topic {name}: {} partitions, {records} records", logs.len());
            core.topics.insert(name.clone(), Topic::new(name, logs, retention));
        }
        if let Some(bytes) = checkpoint {
            core.restore_checkpoint(&bytes, now);
            core.last_checkpoint = bytes;
        }
        Ok(core)
    }

    /// Takes the outputs produced since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Registers a new connection.
    pub fn connect(&mut self, conn: ConnId, peer: String, now: Now) {
        let authed = self.config.auth_token.is_none();
        self.conns.insert(
            conn,
            ConnState {
                peer,
                connected_at: now.mono,
                authed,
                paused: false,
                subs: Vec::new(),
                last_request: now.mono,
            },
        );
        self.counters.connections_total += 1;
    }

    /// Forgets a connection: its subscriptions leave their groups, and what it had in flight
    /// is redelivered to the other members.
    pub fn disconnect(&mut self, conn: ConnId, now: Now) {
        let Some(state) = self.conns.remove(&conn) else { return };
        for (topic, group) in state.subs {
            self.leave(conn, &topic, &group, now);
        }
    }

    /// Queues an error reply for a request the codec rejected, in order with the replies to
    /// the requests before it.
    pub fn reject_request(
        &mut self,
        conn: ConnId,
        request_id: u32,
        code: ErrorCode,
        message: String,
    ) {
        self.outputs.push(Output::Send {
            conn,
            request_id,
            response: Response::Error { code, message },
        });
    }

    /// Queues a fatal error: sent after every earlier reply, then the connection closes.
    pub fn close(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        self.outputs.push(Output::Close { conn, code, message });
    }

    /// Counts a connection refused or closed for an error (for STATS).
    pub fn count_rejected(&mut self) {
        self.counters.connections_rejected += 1;
    }

    /// Counts bytes moved by the event loop (for STATS).
    pub fn count_bytes(&mut self, bytes_in: u64, bytes_out: u64) {
        self.counters.bytes_in += bytes_in;
        self.counters.bytes_out += bytes_out;
    }

    /// Marks a connection's output as backed up (no deliveries) or drained.
    pub fn set_paused(&mut self, conn: ConnId, paused: bool) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.paused = paused;
        }
    }

    /// Handles one request from `conn`.
    pub fn handle(&mut self, conn: ConnId, request_id: u32, request: Request, now: Now) {
        let Some(state) = self.conns.get_mut(&conn) else { return };
        state.last_request = now.mono;
        if !state.authed {
            self.authenticate(conn, request_id, request);
            return;
        }
        let reply = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Auth { .. } => Ok(Response::Ok),
            Request::Info => Ok(Response::Info(self.info_json())),
            Request::Health => Ok(Response::Health(self.health_json(now))),
            Request::Stats => Ok(Response::Stats(self.stats_json(now))),
            Request::Topics => Ok(Response::Topics(self.topics_json())),
            Request::Groups => Ok(Response::Groups(self.groups_json(now))),
            Request::Publish { topic, records } => self.publish(&topic, records, now),
            Request::CreateTopic(create) => self.create_topic(create),
            Request::Subscribe { topic, group, start, credit, kind } => {
                self.subscribe(conn, topic, group, start, credit, kind)
            }
            Request::DeleteGroup { topic, group } => self.delete_group(conn, &topic, &group),
            Request::Unsubscribe { topic, group } => self.unsubscribe(conn, &topic, &group, now),
            Request::Credit { topic, group, credit } => self.credit(conn, &topic, &group, credit),
            Request::Ack { topic, group, ranges } => self.ack(conn, &topic, &group, &ranges),
            Request::Nack { topic, group, delay_ms, ranges } => self.nack(
                conn,
                &topic,
                &group,
                &ranges,
                Duration::from_millis(u64::from(delay_ms)),
                now,
            ),
            Request::Reject { topic, group, ranges } => {
                self.reject(conn, &topic, &group, &ranges, now)
            }
        };
        let response = reply.unwrap_or_else(|(code, message)| Response::Error { code, message });
        self.outputs.push(Output::Send { conn, request_id, response });
    }

    fn authenticate(&mut self, conn: ConnId, request_id: u32, request: Request) {
        let expected = self.config.auth_token.as_deref().unwrap_or_default().as_bytes();
        let output = match request {
            Request::Auth { token } if constant_time_eq(token.as_bytes(), expected) => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    state.authed = true;
                }
                Output::Send { conn, request_id, response: Response::Ok }
            }
            Request::Auth { .. } => {
                Output::Close { conn, code: ErrorCode::AUTH_FAILED, message: "wrong token".into() }
            }
            _ => Output::Close {
                conn,
                code: ErrorCode::AUTH_REQUIRED,
                message: "this broker requires AUTH <token> as the first request".into(),
            },
        };
        self.outputs.push(output);
    }

    /// The topic, created with defaults if it does not exist.
    fn topic_or_create(&mut self, name: &str) -> Result<&mut Topic, (ErrorCode, String)> {
        if !self.topics.contains_key(name) {
            self.create_topic(CreateTopic {
                topic: name.to_string(),
                partitions: 0,
                retention_bytes: 0,
                retention_ms: 0,
            })?;
        }
        Ok(self.topics.get_mut(name).expect("created above"))
    }

    fn create_topic(&mut self, create: CreateTopic) -> Reply {
        let partitions =
            if create.partitions == 0 { self.config.partitions_default } else { create.partitions };
        let retention = Retention {
            bytes: if create.retention_bytes == 0 {
                self.config.retention.bytes
            } else {
                create.retention_bytes
            },
            ms: if create.retention_ms == 0 {
                self.config.retention.ms
            } else {
                create.retention_ms
            },
        };
        if let Some(existing) = self.topics.get(&create.topic) {
            if create.partitions != 0 && existing.partitions() != partitions {
                return Err((
                    ErrorCode::TOPIC_EXISTS,
                    format!(
                        "topic {} exists with {} partitions",
                        create.topic,
                        existing.partitions()
                    ),
                ));
            }
            return Ok(Response::Ok);
        }
        if partitions > self.config.partitions_max.min(PARTITIONS_MAX) {
            return Err((
                ErrorCode::TOO_MANY_PARTITIONS,
                format!(
                    "{partitions} partitions asked, limit {}",
                    self.config.partitions_max.min(PARTITIONS_MAX)
                ),
            ));
        }
        if self.topics.len() >= self.config.topics_max {
            return Err((
                ErrorCode::TOO_MANY_TOPICS,
                format!("limit of {} topics reached", self.config.topics_max),
            ));
        }
        if create.topic.len() + DLQ_SUFFIX.len() > NAME_BYTES_MAX
            && !create.topic.ends_with(DLQ_SUFFIX)
        {
            return Err((
                ErrorCode::BAD_ARG,
                format!(
                    "topic names are at most {} bytes, to leave room for {DLQ_SUFFIX}",
                    NAME_BYTES_MAX - DLQ_SUFFIX.len()
                ),
            ));
        }
        let meta =
            TopicMeta { partitions, retention_bytes: retention.bytes, retention_ms: retention.ms };
        let logs = self.storage.create_topic(&create.topic, meta).map_err(storage_error)?;
        info!("created topic {} with {partitions} partitions", create.topic);
        self.topics.insert(create.topic.clone(), Topic::new(create.topic, logs, retention));
        Ok(Response::Ok)
    }

    fn publish(&mut self, topic_name: &str, records: Vec<Record>, now: Now) -> Reply {
        let record_bytes_max = self.config.frame_body_bytes_max as usize - DELIVER_OVERHEAD_BYTES;
        if let Some(r) = records
            .iter()
            .find(|r| r.value.len() + r.key.as_ref().map_or(0, Bytes::len) > record_bytes_max)
        {
            return Err((
                ErrorCode::BAD_ARG,
                format!(
                    "record of {} bytes exceeds the record limit of {record_bytes_max} bytes",
                    r.value.len()
                ),
            ));
        }
        let topic = self.topic_or_create(topic_name)?;
        let mut placements = Vec::with_capacity(records.len());
        for record in records {
            let partition = topic.choose_partition(record.key.as_deref());
            match topic.append(partition, now.wall_ms, record.key, record.value) {
                Ok(offset) => placements.push(Placement { partition, offset }),
                Err(e) if placements.is_empty() => return Err(storage_error(e)),
                Err(e) => {
                    // Earlier records of the batch are stored; the reply must say which.
                    warn!("publish to {topic_name} stored {} of the batch: {e}", placements.len());
                    return Err(storage_error(e));
                }
            }
        }
        Ok(Response::Published(placements))
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        topic: String,
        group: String,
        start: StartPosition,
        credit: u32,
        kind: GroupKind,
    ) -> Reply {
        let state = self.conns.get(&conn).expect("handle checked the connection");
        if state.subs.iter().any(|(t, _)| *t == topic) {
            return Err((
                ErrorCode::ALREADY_SUBSCRIBED,
                format!("this connection already subscribes to {topic}"),
            ));
        }
        self.check_kind(&topic, &group, kind)?;
        let credit = credit.min(self.config.credit_max);
        let key = (topic.clone(), group.clone());
        if !self.groups.contains_key(&key) && self.groups.len() >= self.config.groups_max {
            return Err((
                ErrorCode::TOO_MANY_GROUPS,
                format!("limit of {} groups reached", self.config.groups_max),
            ));
        }
        let ack_timeout =
            self.config.group_ack_timeouts.get(&group).copied().unwrap_or(self.config.ack_timeout);
        self.topic_or_create(&topic)?;
        let t = self.topics.get_mut(&topic).expect("created above");
        let partitions = t.partitions();
        if !t.groups.contains(&group) {
            t.groups.push(group.clone());
        }
        let logs = &t.logs;
        let g = self.groups.entry(key).or_insert_with(|| {
            Group::new(group.clone(), topic.clone(), kind, logs, start, ack_timeout)
        });
        g.join(conn, credit);
        self.conns.get_mut(&conn).expect("checked above").subs.push((topic, group));
        Ok(Response::Subscribed { partitions })
    }

    fn unsubscribe(&mut self, conn: ConnId, topic: &str, group: &str, now: Now) -> Reply {
        let state = self.conns.get_mut(&conn).expect("handle checked the connection");
        let before = state.subs.len();
        state.subs.retain(|(t, g)| !(t == topic && g == group));
        if state.subs.len() == before {
            return Err(not_subscribed(topic, group));
        }
        self.leave(conn, topic, group, now);
        Ok(Response::Ok)
    }

    /// The group `conn` is a member of.
    fn member_group(
        &mut self,
        conn: ConnId,
        topic: &str,
        group: &str,
    ) -> Result<&mut Group, (ErrorCode, String)> {
        match self.groups.get_mut(&(topic.to_string(), group.to_string())) {
            Some(g) if g.is_member(conn) => Ok(g),
            _ => Err(not_subscribed(topic, group)),
        }
    }

    fn credit(&mut self, conn: ConnId, topic: &str, group: &str, credit: u32) -> Reply {
        let credit = credit.min(self.config.credit_max);
        let g = self.member_group(conn, topic, group)?;
        g.member_mut(conn).expect("member_group checked membership").credit = credit;
        Ok(Response::Ok)
    }

    fn ack(&mut self, conn: ConnId, topic: &str, group: &str, ranges: &[OffsetRange]) -> Reply {
        let g = self.member_group(conn, topic, group)?;
        g.ack(ranges).map_err(range_error)?;
        Ok(Response::Ok)
    }

    fn nack(
        &mut self,
        conn: ConnId,
        topic: &str,
        group: &str,
        ranges: &[OffsetRange],
        delay: Duration,
        now: Now,
    ) -> Reply {
        let max_deliveries = self.config.max_deliveries;
        let mut dead = Vec::new();
        let g = self.member_group(conn, topic, group)?;
        g.nack(ranges, delay, now.mono, max_deliveries, &mut dead).map_err(range_error)?;
        self.dead_letter(topic, &dead, now);
        Ok(Response::Ok)
    }

    fn reject(
        &mut self,
        conn: ConnId,
        topic: &str,
        group: &str,
        ranges: &[OffsetRange],
        now: Now,
    ) -> Reply {
        let mut dead = Vec::new();
        let g = self.member_group(conn, topic, group)?;
        g.reject(ranges, &mut dead).map_err(range_error)?;
        self.dead_letter(topic, &dead, now);
        Ok(Response::Ok)
    }

    /// Copies dead records to `<topic>.dlq`, each prefixed by one header line:
    /// `DLQ <topic> <partition> <offset> <attempts> <reason>\n`.
    fn dead_letter(&mut self, topic: &str, dead: &[DeadLetter], now: Now) {
        if dead.is_empty() {
            return;
        }
        if topic.ends_with(DLQ_SUFFIX) {
            warn!("dropping {} dead letters of dead-letter topic {topic}", dead.len());
            return;
        }
        let mut letters = Vec::with_capacity(dead.len());
        if let Some(t) = self.topics.get(topic) {
            let mut scratch = Vec::new();
            for d in dead {
                scratch.clear();
                let log = &t.logs[d.partition as usize];
                if log.read(d.offset, 1, usize::MAX, &mut scratch).is_err() {
                    continue;
                }
                if let Some(record) = scratch.pop().filter(|r| r.offset == d.offset) {
                    let mut value = BytesMut::new();
                    let header = format!(
                        "DLQ {topic} {} {} {} {}\n",
                        d.partition, d.offset, d.attempts, d.reason
                    );
                    value.put_slice(header.as_bytes());
                    value.put_slice(&record.value);
                    letters.push((record.key, value.freeze()));
                }
            }
        }
        let dlq_name = format!("{topic}{DLQ_SUFFIX}");
        let dlq = match self.topic_or_create(&dlq_name) {
            Ok(t) => t,
            Err((_, e)) => {
                warn!("cannot create {dlq_name}: {e}; {} dead letters dropped", letters.len());
                return;
            }
        };
        for (key, value) in letters {
            let p = dlq.choose_partition(key.as_deref());
            if let Err(e) = dlq.append(p, now.wall_ms, key, value) {
                warn!("dead letter to {dlq_name} lost: {e}");
            }
        }
    }

    /// Runs timers: acknowledgement timeouts, NACK delays, AUTH deadlines, group expiry.
    pub fn tick(&mut self, now: Now) {
        self.drop_stalled_members(now);
        self.expire_groups(now);
        let max_deliveries = self.config.max_deliveries;
        let mut all_dead: Vec<(String, Vec<DeadLetter>)> = Vec::new();
        for ((topic, _), g) in self.groups.iter_mut() {
            let mut dead = Vec::new();
            g.expire(now.mono, max_deliveries, &mut dead);
            if !dead.is_empty() {
                all_dead.push((topic.clone(), dead));
            }
        }
        for (topic, dead) in all_dead {
            self.dead_letter(&topic, &dead, now);
        }
        let auth_timeout = self.config.auth_timeout;
        let idle_timeout = self.config.idle_timeout;
        for (&conn, state) in &mut self.conns {
            if state.authed
                && !idle_timeout.is_zero()
                && now.mono.duration_since(state.last_request) >= idle_timeout
            {
                // Counted from now again, so the close is queued once.
                state.last_request = now.mono;
                self.counters.connections_rejected += 1;
                self.outputs.push(Output::Close {
                    conn,
                    code: ErrorCode::IDLE_TIMEOUT,
                    message: format!("no request for {} ms", idle_timeout.as_millis()),
                });
                continue;
            }
            if !state.authed && now.mono.duration_since(state.connected_at) >= auth_timeout {
                self.outputs.push(Output::Close {
                    conn,
                    code: ErrorCode::AUTH_TIMEOUT,
                    message: format!("no AUTH within {} ms", auth_timeout.as_millis()),
                });
            }
        }
    }

    /// Closes the connections of members that hold timed-out records and sent nothing since
    /// those were delivered (`IDLE_TIMEOUT`), and takes them out of their groups at once, so
    /// their partitions and records go to the rest of each group. A consumer that keeps
    /// working sends acks (or any request) at least once per ack timeout.
    fn drop_stalled_members(&mut self, now: Now) {
        let mut stalled: Vec<ConnId> = Vec::new();
        for g in self.groups.values() {
            let conns = &self.conns;
            // A paused connection (output backed up) has its requests left unread: the
            // slow-consumer limit deals with it.
            let quiet_since = |c| conns.get(&c).filter(|s| !s.paused).map(|s| s.last_request);
            for c in g.stalled(now.mono, quiet_since) {
                if !stalled.contains(&c) {
                    stalled.push(c);
                }
            }
        }
        for conn in stalled {
            let Some(state) = self.conns.get_mut(&conn) else { continue };
            let subs = std::mem::take(&mut state.subs);
            let quiet_ms = now.mono.duration_since(state.last_request).as_millis();
            warn!(
                "conn {conn} ({}) closed: {} sent nothing for {quiet_ms} ms while records delivered to it timed out",
                state.peer,
                ErrorCode::IDLE_TIMEOUT
            );
            for (topic, group) in subs {
                self.leave(conn, &topic, &group, now);
            }
            self.counters.connections_rejected += 1;
            self.outputs.push(Output::Close {
                conn,
                code: ErrorCode::IDLE_TIMEOUT,
                message: format!(
                    "sent nothing for {quiet_ms} ms while records delivered to it timed out; its partitions went to the rest of the group"
                ),
            });
        }
    }

    /// Applies retention to every partition (call about once a second).
    pub fn apply_retention(&mut self, now: Now) {
        for t in self.topics.values_mut() {
            let retention = t.retention;
            for log in &mut t.logs {
                log.apply_retention(retention, now.wall_ms);
            }
        }
        for ((topic, _), g) in self.groups.iter_mut() {
            if let Some(t) = self.topics.get(topic) {
                g.apply_retention(&t.logs);
            }
        }
    }

    /// Makes every append so far durable (group commit: once per event-loop turn).
    ///
    /// # Errors
    /// The first storage failure; HEALTH reports it until a later sync succeeds.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let result = self.sync_dirty();
        self.storage_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    /// Takes the result of a flush made elsewhere (the flusher thread): `HEALTH` reports
    /// `degraded` from a failed flush until a later one succeeds, as for an inline sync.
    pub fn note_flush(&mut self, result: Result<(), String>) {
        self.storage_error = result.err().map(|e| format!("flush to disk failed: {e}"));
    }

    /// Whether any partition has appends not yet made durable.
    pub fn has_dirty(&self) -> bool {
        self.topics.values().flat_map(|t| &t.logs).any(|l| l.dirty())
    }

    /// Hands durability of everything appended so far to a flush made elsewhere (the
    /// flusher thread's `syncfs`); returns false if there was nothing to flush.
    pub fn take_dirty(&mut self) -> bool {
        let mut any = false;
        for log in self.topics.values_mut().flat_map(|t| &mut t.logs) {
            if log.dirty() {
                log.mark_synced();
                any = true;
            }
        }
        any
    }

    /// A function flushing storage, callable from another thread, if the storage has one.
    pub fn flush_fn(&self) -> Option<crate::storage::FlushFn> {
        self.storage.flush_fn()
    }

    fn sync_dirty(&mut self) -> Result<(), StorageError> {
        let dirty = self.topics.values().flat_map(|t| &t.logs).filter(|l| l.dirty()).count();
        if dirty > 1 && self.storage.sync_all()? {
            self.topics.values_mut().flat_map(|t| &mut t.logs).for_each(|l| l.mark_synced());
            return Ok(());
        }
        for log in self.topics.values_mut().flat_map(|t| &mut t.logs) {
            if log.dirty() {
                log.sync()?;
            }
        }
        Ok(())
    }

    /// Delivers to every member with credit what is waiting for it.
    pub fn pump(&mut self, now: Now) {
        let limits = PumpLimits {
            records_max: DELIVER_RECORDS_MAX,
            bytes_max: (self.config.frame_body_bytes_max as usize) / 2,
        };
        let conns = &self.conns;
        let paused = |c: ConnId| conns.get(&c).is_none_or(|s| s.paused);
        let mut batches = Vec::new();
        for ((topic, _), g) in self.groups.iter_mut() {
            let Some(t) = self.topics.get_mut(topic) else { continue };
            batches.clear();
            g.pump(&t.logs, paused, now.mono, limits, &mut batches);
            for (conn, records) in batches.drain(..) {
                t.counters.records_out += records.len() as u64;
                t.counters.bytes_out += records.iter().map(|d| d.value.len() as u64).sum::<u64>();
                let response =
                    Response::Deliver(mq_protocol::Deliver { topic: topic.clone(), records });
                self.outputs.push(Output::Send { conn, request_id: 0, response });
            }
        }
    }

    /// Closes every log cleanly, writes the final checkpoint and the clean-shutdown marker
    /// (graceful shutdown). A failure leaves the marker unwritten, so the next start recovers.
    ///
    /// # Errors
    /// The first storage failure.
    pub fn close_storage(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        self.checkpoint()?;
        for t in self.topics.values_mut() {
            for log in &mut t.logs {
                log.close()?;
            }
        }
        self.storage.mark_clean()
    }

    /// Committed offset (lowest unacknowledged) of a group on one partition.
    pub fn committed(&self, topic: &str, group: &str, partition: u32) -> Option<u64> {
        let g = self.groups.get(&(topic.to_string(), group.to_string()))?;
        (partition < g.partition_count()).then(|| g.committed(partition))
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

fn not_subscribed(topic: &str, group: &str) -> (ErrorCode, String) {
    (
        ErrorCode::NOT_SUBSCRIBED,
        format!("this connection is not subscribed to {topic} in group {group}"),
    )
}

fn range_error(e: RangeError) -> (ErrorCode, String) {
    match e {
        RangeError::NoSuchPartition(m) => (ErrorCode::NO_SUCH_PARTITION, m),
        RangeError::NotInFlight(m) => (ErrorCode::NOT_IN_FLIGHT, m),
    }
}

fn storage_error(e: StorageError) -> (ErrorCode, String) {
    match e {
        StorageError::Full(m) => (ErrorCode::STORAGE_FULL, m),
        StorageError::Io(e) => (ErrorCode::STORAGE_ERROR, e.to_string()),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;
