//! Requests (client to broker) and their binary bodies.
//!
//! Both dialects decode into [`Request`], so the broker never knows which one a connection
//! speaks. Each variant's doc gives its body layout; `spec/wire.md` has the same tables with
//! examples. Field types: `u8`/`u16`/`u32`/`u64` big-endian, `str16` = u16 length + UTF-8,
//! `bytes16` = u16 length + bytes, `bytes32` = u32 length + bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::fields::{put_bytes16, put_bytes32, Reader};
use crate::frame::{encode_frame, Opcode};
use crate::limits::{PUBLISH_RECORD_BYTES_MIN, RANGE_BYTES};
use crate::names::{validate_key, validate_name, validate_token};
use crate::ProtoError;

/// Where a new subscription starts reading a partition it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StartPosition {
    /// The group's committed offset (its lowest unacknowledged one); earliest if it has none.
    Committed = 0,
    /// The oldest record the broker still holds.
    Earliest = 1,
    /// Only records published after the subscription; applies when the group has no
    /// committed offset yet.
    Latest = 2,
}

impl StartPosition {
    /// The position with this wire value.
    pub fn from_u8(value: u8) -> Option<StartPosition> {
        match value {
            0 => Some(StartPosition::Committed),
            1 => Some(StartPosition::Earliest),
            2 => Some(StartPosition::Latest),
            _ => None,
        }
    }

    /// The word for this position in the text dialect.
    pub fn word(self) -> &'static str {
        match self {
            StartPosition::Committed => "committed",
            StartPosition::Earliest => "earliest",
            StartPosition::Latest => "latest",
        }
    }
}

/// Whether a consumer group outlives its members.
///
/// The kind is fixed when the group is created (by its first `SUBSCRIBE`); a subscription of
/// the other kind to an existing group is refused with `GROUP_KIND_MISMATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupKind {
    /// Kept without members, committed offsets checkpointed, until deleted by
    /// `DELETE_GROUP` or by the broker's group expiry. Travels as `SUBSCRIBE` (0x20).
    #[default]
    Durable,
    /// Deleted with its offsets and records in flight when its last member leaves, and
    /// never checkpointed: a group for one look. Travels as `SUBSCRIBE_EPHEMERAL` (0x24).
    Ephemeral,
}

impl GroupKind {
    /// The word for this kind in admin documents and the text dialect.
    pub fn word(self) -> &'static str {
        match self {
            GroupKind::Durable => "durable",
            GroupKind::Ephemeral => "ephemeral",
        }
    }
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key; records with the same key go to the same partition, in order.
    /// `None` spreads records round-robin.
    pub key: Option<Bytes>,
    /// The payload, opaque to the broker.
    pub value: Bytes,
}

/// An inclusive range of offsets in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// Partition number.
    pub partition: u32,
    /// First offset of the range.
    pub first: u64,
    /// Last offset of the range (inclusive; equal to `first` for one offset).
    pub last: u64,
}

/// Settings of a topic to create. Zero in a numeric field means "the broker's default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Topic name.
    pub topic: String,
    /// Partition count; 0 for the broker's default.
    pub partitions: u32,
    /// Retention by size per partition, in bytes; 0 for the broker's default.
    pub retention_bytes: u64,
    /// Retention by age, in milliseconds; 0 for the broker's default.
    pub retention_ms: u64,
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PING` (0x01): empty body.
    Ping,
    /// `AUTH` (0x03): `token str16`.
    Auth {
        /// The shared secret.
        token: String,
    },
    /// `INFO` (0x04): empty body.
    Info,
    /// `HEALTH` (0x06): empty body.
    Health,
    /// `PUBLISH` (0x10): `topic str16, count u32`, then `count` records of
    /// `key_len u16, key, value_len u32, value` (`key_len` 0 means no key).
    Publish {
        /// Topic; created with default settings if it does not exist.
        topic: String,
        /// One or more records.
        records: Vec<Record>,
    },
    /// `CREATE_TOPIC` (0x12): `topic str16, partitions u32, retention_bytes u64, retention_ms u64`.
    CreateTopic(CreateTopic),
    /// `SUBSCRIBE` (0x20) for a durable group, `SUBSCRIBE_EPHEMERAL` (0x24) for an
    /// ephemeral one; the same body: `topic str16, group str16, start u8, credit u32`.
    Subscribe {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Where to start on partitions the group has not consumed yet.
        start: StartPosition,
        /// Most records in flight (delivered, unacknowledged) to this subscription.
        credit: u32,
        /// The kind of group this subscription creates or expects; chosen by the opcode.
        kind: GroupKind,
    },
    /// `UNSUBSCRIBE` (0x22): `topic str16, group str16`.
    Unsubscribe {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
    },
    /// `CREDIT` (0x23): `topic str16, group str16, credit u32`.
    Credit {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// New credit.
        credit: u32,
    },
    /// `ACK` (0x31): `topic str16, group str16, count u32`, then `count` ranges of
    /// `partition u32, first u64, last u64`.
    Ack {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Offsets acknowledged.
        ranges: Vec<OffsetRange>,
    },
    /// `NACK` (0x32): `topic str16, group str16, delay_ms u32, count u32`, then ranges.
    Nack {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Wait this long before redelivering, in milliseconds.
        delay_ms: u32,
        /// Offsets given back.
        ranges: Vec<OffsetRange>,
    },
    /// `REJECT` (0x33): `topic str16, group str16, count u32`, then ranges.
    Reject {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Offsets sent to the dead-letter topic.
        ranges: Vec<OffsetRange>,
    },
    /// `STATS` (0x40): empty body.
    Stats,
    /// `TOPICS` (0x42): empty body.
    Topics,
    /// `GROUPS` (0x44): empty body.
    Groups,
    /// `DELETE_GROUP` (0x46): `topic str16, group str16`.
    DeleteGroup {
        /// Topic.
        topic: String,
        /// Consumer group to delete (it must have no members).
        group: String,
    },
}

impl Request {
    /// The opcode this request travels under.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Ping => Opcode::Ping,
            Request::Auth { .. } => Opcode::Auth,
            Request::Info => Opcode::Info,
            Request::Health => Opcode::Health,
            Request::Publish { .. } => Opcode::Publish,
            Request::CreateTopic(_) => Opcode::CreateTopic,
            Request::Subscribe { kind: GroupKind::Durable, .. } => Opcode::Subscribe,
            Request::Subscribe { kind: GroupKind::Ephemeral, .. } => Opcode::SubscribeEphemeral,
            Request::Unsubscribe { .. } => Opcode::Unsubscribe,
            Request::Credit { .. } => Opcode::Credit,
            Request::Ack { .. } => Opcode::Ack,
            Request::Nack { .. } => Opcode::Nack,
            Request::Reject { .. } => Opcode::Reject,
            Request::Stats => Opcode::Stats,
            Request::Topics => Opcode::Topics,
            Request::Groups => Opcode::Groups,
            Request::DeleteGroup { .. } => Opcode::DeleteGroup,
        }
    }

    /// Checks every field's value: names, keys, tokens, non-empty batches, ordered ranges.
    /// Both decoders call it, and a client should call it before sending.
    ///
    /// # Errors
    /// [`ProtoError::BadArg`] naming the field.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            Request::Auth { token } => validate_token(token),
            Request::Publish { topic, records } => {
                validate_name("topic", topic)?;
                if records.is_empty() {
                    return Err(ProtoError::BadArg("a publish carries at least one record".into()));
                }
                records.iter().filter_map(|r| r.key.as_deref()).try_for_each(validate_key)
            }
            Request::CreateTopic(create) => validate_name("topic", &create.topic),
            Request::Subscribe { topic, group, .. }
            | Request::Unsubscribe { topic, group }
            | Request::DeleteGroup { topic, group }
            | Request::Credit { topic, group, .. } => validate_pair(topic, group),
            Request::Ack { topic, group, ranges }
            | Request::Nack { topic, group, ranges, .. }
            | Request::Reject { topic, group, ranges } => {
                validate_pair(topic, group)?;
                validate_ranges(ranges)
            }
            Request::Ping
            | Request::Info
            | Request::Health
            | Request::Stats
            | Request::Topics
            | Request::Groups => Ok(()),
        }
    }

    /// Appends this request as one binary frame.
    ///
    /// # Errors
    /// [`ProtoError::FrameTooLarge`] if the body would exceed `body_bytes_max`; nothing is
    /// appended then.
    pub fn encode(
        &self,
        request_id: u32,
        body_bytes_max: u32,
        out: &mut BytesMut,
    ) -> Result<(), ProtoError> {
        encode_frame(out, self.opcode(), request_id, body_bytes_max, |out| self.encode_body(out))
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Request::Ping
            | Request::Info
            | Request::Health
            | Request::Stats
            | Request::Topics
            | Request::Groups => {}
            Request::Auth { token } => put_bytes16(out, token.as_bytes()),
            Request::Publish { topic, records } => {
                put_bytes16(out, topic.as_bytes());
                out.put_u32(records.len() as u32);
                for record in records {
                    put_bytes16(out, record.key.as_deref().unwrap_or_default());
                    put_bytes32(out, &record.value);
                }
            }
            Request::CreateTopic(c) => {
                put_bytes16(out, c.topic.as_bytes());
                out.put_u32(c.partitions);
                out.put_u64(c.retention_bytes);
                out.put_u64(c.retention_ms);
            }
            Request::Subscribe { topic, group, start, credit, .. } => {
                put_pair(out, topic, group);
                out.put_u8(*start as u8);
                out.put_u32(*credit);
            }
            Request::Unsubscribe { topic, group } | Request::DeleteGroup { topic, group } => {
                put_pair(out, topic, group)
            }
            Request::Credit { topic, group, credit } => {
                put_pair(out, topic, group);
                out.put_u32(*credit);
            }
            Request::Ack { topic, group, ranges } | Request::Reject { topic, group, ranges } => {
                put_pair(out, topic, group);
                put_ranges(out, ranges);
            }
            Request::Nack { topic, group, delay_ms, ranges } => {
                put_pair(out, topic, group);
                out.put_u32(*delay_ms);
                put_ranges(out, ranges);
            }
        }
    }

    /// Decodes a request body. `opcode` is the header's raw byte.
    ///
    /// # Errors
    /// [`ProtoError::UnknownOpcode`] for a byte that is not a request,
    /// [`ProtoError::Malformed`] for a body that does not match the layout, and
    /// [`ProtoError::BadArg`] for a field whose value is invalid. None of them breaks framing.
    pub fn decode_body(opcode: u8, body: Bytes) -> Result<Request, ProtoError> {
        let op = Opcode::from_u8(opcode).ok_or(ProtoError::UnknownOpcode(opcode))?;
        let mut r = Reader::new(body);
        let request = match op {
            Opcode::Ping => Request::Ping,
            Opcode::Info => Request::Info,
            Opcode::Health => Request::Health,
            Opcode::Stats => Request::Stats,
            Opcode::Topics => Request::Topics,
            Opcode::Groups => Request::Groups,
            Opcode::Auth => Request::Auth { token: r.str16("token")? },
            Opcode::Publish => decode_publish(&mut r)?,
            Opcode::CreateTopic => Request::CreateTopic(CreateTopic {
                topic: r.str16("topic")?,
                partitions: r.u32("partitions")?,
                retention_bytes: r.u64("retention_bytes")?,
                retention_ms: r.u64("retention_ms")?,
            }),
            Opcode::Subscribe => decode_subscribe(&mut r, GroupKind::Durable)?,
            Opcode::SubscribeEphemeral => decode_subscribe(&mut r, GroupKind::Ephemeral)?,
            Opcode::Unsubscribe => {
                let (topic, group) = get_pair(&mut r)?;
                Request::Unsubscribe { topic, group }
            }
            Opcode::DeleteGroup => {
                let (topic, group) = get_pair(&mut r)?;
                Request::DeleteGroup { topic, group }
            }
            Opcode::Credit => {
                let (topic, group) = get_pair(&mut r)?;
                Request::Credit { topic, group, credit: r.u32("credit")? }
            }
            Opcode::Ack | Opcode::Reject => {
                let (topic, group) = get_pair(&mut r)?;
                let ranges = get_ranges(&mut r)?;
                if op == Opcode::Ack {
                    Request::Ack { topic, group, ranges }
                } else {
                    Request::Reject { topic, group, ranges }
                }
            }
            Opcode::Nack => {
                let (topic, group) = get_pair(&mut r)?;
                let delay_ms = r.u32("delay_ms")?;
                Request::Nack { topic, group, delay_ms, ranges: get_ranges(&mut r)? }
            }
            _ => return Err(ProtoError::UnknownOpcode(opcode)),
        };
        r.finish()?;
        request.validate()?;
        Ok(request)
    }
}

fn decode_publish(r: &mut Reader) -> Result<Request, ProtoError> {
    let topic = r.str16("topic")?;
    let count = r.count(PUBLISH_RECORD_BYTES_MIN, "record count")?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let key = r.bytes16("key")?;
        let value = r.bytes32("value")?;
        records.push(Record { key: (!key.is_empty()).then_some(key), value });
    }
    Ok(Request::Publish { topic, records })
}

/// The body shared by `SUBSCRIBE` and `SUBSCRIBE_EPHEMERAL`; the opcode gives the kind.
fn decode_subscribe(r: &mut Reader, kind: GroupKind) -> Result<Request, ProtoError> {
    let (topic, group) = get_pair(r)?;
    let start_byte = r.u8("start")?;
    let start = StartPosition::from_u8(start_byte)
        .ok_or_else(|| ProtoError::BadArg(format!("start {start_byte} is not 0, 1 or 2")))?;
    Ok(Request::Subscribe { topic, group, start, credit: r.u32("credit")?, kind })
}

fn validate_pair(topic: &str, group: &str) -> Result<(), ProtoError> {
    validate_name("topic", topic)?;
    validate_name("group", group)
}

fn validate_ranges(ranges: &[OffsetRange]) -> Result<(), ProtoError> {
    if ranges.is_empty() {
        return Err(ProtoError::BadArg("at least one offset range is required".into()));
    }
    match ranges.iter().find(|r| r.first > r.last) {
        Some(r) => {
            Err(ProtoError::BadArg(format!("range {}-{} has first > last", r.first, r.last)))
        }
        None => Ok(()),
    }
}

fn put_pair(out: &mut BytesMut, topic: &str, group: &str) {
    put_bytes16(out, topic.as_bytes());
    put_bytes16(out, group.as_bytes());
}

fn get_pair(r: &mut Reader) -> Result<(String, String), ProtoError> {
    Ok((r.str16("topic")?, r.str16("group")?))
}

fn put_ranges(out: &mut BytesMut, ranges: &[OffsetRange]) {
    out.put_u32(ranges.len() as u32);
    for range in ranges {
        out.put_u32(range.partition);
        out.put_u64(range.first);
        out.put_u64(range.last);
    }
}

fn get_ranges(r: &mut Reader) -> Result<Vec<OffsetRange>, ProtoError> {
    let count = r.count(RANGE_BYTES, "range count")?;
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        ranges.push(OffsetRange {
            partition: r.u32("partition")?,
            first: r.u64("first")?,
            last: r.u64("last")?,
        });
    }
    Ok(ranges)
}
