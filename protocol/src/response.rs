//! Responses and pushes (broker to client) and their binary bodies.
//!
//! Admin replies (`INFO_REPLY`, `HEALTH_REPLY`, `STATS_REPLY`, `TOPICS_REPLY`, `GROUPS_REPLY`)
//! carry one compact JSON document as their whole body; [`crate::admin`] has its types.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;
use crate::fields::{put_bytes16, put_bytes32, Reader};
use crate::frame::{encode_frame, Opcode, MAGIC, VERSION};
use crate::limits::{
    DELIVER_RECORD_BYTES_MIN, ERROR_MESSAGE_BYTES_MAX, FRAME_HEADER_BYTES, PLACEMENT_BYTES,
};
use crate::ProtoError;

/// Where one published record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Partition the broker chose.
    pub partition: u32,
    /// Offset of the record in that partition.
    pub offset: u64,
}

/// One delivered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// 1 on first delivery, then 2, 3, … on each redelivery.
    pub attempt: u32,
    /// When the broker appended the record, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The record's key, if it had one.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
}

/// A batch of records of one topic pushed to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// Topic.
    pub topic: String,
    /// Records, in offset order within each partition.
    pub records: Vec<Delivery>,
}

/// A reply or push from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `PONG` (0x02): empty body.
    Pong,
    /// `OK` (0x7E): empty body.
    Ok,
    /// `INFO_REPLY` (0x05): JSON document.
    Info(Bytes),
    /// `HEALTH_REPLY` (0x07): JSON document.
    Health(Bytes),
    /// `STATS_REPLY` (0x41): JSON document.
    Stats(Bytes),
    /// `TOPICS_REPLY` (0x43): JSON document.
    Topics(Bytes),
    /// `GROUPS_REPLY` (0x45): JSON document.
    Groups(Bytes),
    /// `PUBLISHED` (0x11): `count u32`, then `count` × `partition u32, offset u64`.
    Published(Vec<Placement>),
    /// `SUBSCRIBED` (0x21): `partitions u32`.
    Subscribed {
        /// The topic's partition count.
        partitions: u32,
    },
    /// `DELIVER` (0x30), a push with request id 0: `topic str16, count u32`, then `count` ×
    /// `partition u32, offset u64, attempt u32, timestamp_ms u64, key bytes16, value bytes32`.
    Deliver(Deliver),
    /// `ERROR` (0x7F): `code u16, message str16`.
    Error {
        /// The named code.
        code: ErrorCode,
        /// Human-readable detail (at most 1024 bytes).
        message: String,
    },
}

impl Response {
    /// The error reply for a decode failure.
    pub fn from_error(error: &ProtoError) -> Response {
        Response::Error { code: error.code(), message: error.to_string() }
    }

    /// The opcode this response travels under.
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Pong => Opcode::Pong,
            Response::Ok => Opcode::Ok,
            Response::Info(_) => Opcode::InfoReply,
            Response::Health(_) => Opcode::HealthReply,
            Response::Stats(_) => Opcode::StatsReply,
            Response::Topics(_) => Opcode::TopicsReply,
            Response::Groups(_) => Opcode::GroupsReply,
            Response::Published(_) => Opcode::Published,
            Response::Subscribed { .. } => Opcode::Subscribed,
            Response::Deliver(_) => Opcode::Deliver,
            Response::Error { .. } => Opcode::Error,
        }
    }

    /// Appends this response as one binary frame.
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
            Response::Pong | Response::Ok => {}
            Response::Info(json)
            | Response::Health(json)
            | Response::Stats(json)
            | Response::Topics(json)
            | Response::Groups(json) => out.put_slice(json),
            Response::Published(placements) => {
                out.put_u32(placements.len() as u32);
                for p in placements {
                    out.put_u32(p.partition);
                    out.put_u64(p.offset);
                }
            }
            Response::Subscribed { partitions } => out.put_u32(*partitions),
            Response::Deliver(deliver) => {
                put_bytes16(out, deliver.topic.as_bytes());
                out.put_u32(deliver.records.len() as u32);
                for d in &deliver.records {
                    put_delivery(
                        out,
                        d.partition,
                        d.offset,
                        d.attempt,
                        d.timestamp_ms,
                        d.key.as_deref(),
                        &d.value,
                    );
                }
            }
            Response::Error { code, message } => {
                out.put_u16(code.0);
                put_bytes16(out, truncate_utf8(message, ERROR_MESSAGE_BYTES_MAX).as_bytes());
            }
        }
    }

    /// Decodes a response body. `opcode` is the header's raw byte.
    ///
    /// # Errors
    /// [`ProtoError::UnknownOpcode`] for a byte that is not a response, and
    /// [`ProtoError::Malformed`] for a body that does not match the layout.
    pub fn decode_body(opcode: u8, body: Bytes) -> Result<Response, ProtoError> {
        let op = Opcode::from_u8(opcode).ok_or(ProtoError::UnknownOpcode(opcode))?;
        let mut r = Reader::new(body);
        let response = match op {
            Opcode::Pong => Response::Pong,
            Opcode::Ok => Response::Ok,
            Opcode::InfoReply => Response::Info(r.rest()),
            Opcode::HealthReply => Response::Health(r.rest()),
            Opcode::StatsReply => Response::Stats(r.rest()),
            Opcode::TopicsReply => Response::Topics(r.rest()),
            Opcode::GroupsReply => Response::Groups(r.rest()),
            Opcode::Published => {
                let count = r.count(PLACEMENT_BYTES, "placement count")?;
                let mut placements = Vec::with_capacity(count);
                for _ in 0..count {
                    placements.push(Placement {
                        partition: r.u32("partition")?,
                        offset: r.u64("offset")?,
                    });
                }
                Response::Published(placements)
            }
            Opcode::Subscribed => Response::Subscribed { partitions: r.u32("partitions")? },
            Opcode::Deliver => Response::Deliver(decode_deliver(&mut r)?),
            Opcode::Error => {
                Response::Error { code: ErrorCode(r.u16("code")?), message: r.str16("message")? }
            }
            _ => return Err(ProtoError::UnknownOpcode(opcode)),
        };
        r.finish()?;
        Ok(response)
    }
}

fn decode_deliver(r: &mut Reader) -> Result<Deliver, ProtoError> {
    let topic = r.str16("topic")?;
    let count = r.count(DELIVER_RECORD_BYTES_MIN, "record count")?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let partition = r.u32("partition")?;
        let offset = r.u64("offset")?;
        let attempt = r.u32("attempt")?;
        let timestamp_ms = r.u64("timestamp_ms")?;
        let key = r.bytes16("key")?;
        let value = r.bytes32("value")?;
        records.push(Delivery {
            partition,
            offset,
            attempt,
            timestamp_ms,
            key: (!key.is_empty()).then_some(key),
            value,
        });
    }
    Ok(Deliver { topic, records })
}

fn put_delivery(
    out: &mut BytesMut,
    partition: u32,
    offset: u64,
    attempt: u32,
    timestamp_ms: u64,
    key: Option<&[u8]>,
    value: &[u8],
) {
    out.put_u32(partition);
    out.put_u64(offset);
    out.put_u32(attempt);
    out.put_u64(timestamp_ms);
    put_bytes16(out, key.unwrap_or_default());
    put_bytes32(out, value);
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a `DELIVER` frame record by record, straight into an output buffer, so the broker
/// need not build a [`Deliver`] value first. Call [`DeliverWriter::finish`] to fill in the
/// count and length; a writer dropped without it leaves a broken frame, so the broker always
/// finishes what it starts.
#[derive(Debug)]
pub struct DeliverWriter {
    start: usize,
    count_at: usize,
    count: u32,
}

impl DeliverWriter {
    /// Starts a `DELIVER` frame for `topic` at the end of `out`.
    pub fn begin(out: &mut BytesMut, topic: &str) -> DeliverWriter {
        let start = out.len();
        out.put_u8(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(Opcode::Deliver as u8);
        out.put_u8(0);
        out.put_u32(0);
        out.put_u32(0);
        put_bytes16(out, topic.as_bytes());
        let count_at = out.len();
        out.put_u32(0);
        DeliverWriter { start, count_at, count: 0 }
    }

    /// Appends one record.
    pub fn push(&mut self, out: &mut BytesMut, d: &Delivery) {
        put_delivery(
            out,
            d.partition,
            d.offset,
            d.attempt,
            d.timestamp_ms,
            d.key.as_deref(),
            &d.value,
        );
        self.count += 1;
    }

    /// Records appended so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the frame so far.
    pub fn frame_bytes(&self, out: &BytesMut) -> usize {
        out.len() - self.start
    }

    /// Fills in the record count and body length.
    pub fn finish(self, out: &mut BytesMut) {
        let body_len = (out.len() - self.start - FRAME_HEADER_BYTES) as u32;
        out[self.start + 4..self.start + 8].copy_from_slice(&body_len.to_be_bytes());
        out[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_writer_matches_the_value_encoder() {
        let d = Delivery {
            partition: 3,
            offset: 42,
            attempt: 1,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"hello"),
        };
        let mut a = BytesMut::new();
        let mut w = DeliverWriter::begin(&mut a, "t");
        w.push(&mut a, &d);
        w.push(&mut a, &d);
        w.finish(&mut a);
        let mut b = BytesMut::new();
        let value = Response::Deliver(Deliver { topic: "t".into(), records: vec![d.clone(), d] });
        value.encode(0, u32::MAX, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn error_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        assert!(truncate_utf8(&long, ERROR_MESSAGE_BYTES_MAX).len() <= ERROR_MESSAGE_BYTES_MAX);
        assert_eq!(truncate_utf8("abc", 2), "ab");
    }
}
