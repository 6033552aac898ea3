//! The binary frame: a 12-byte big-endian header, then the body.
//!
//! # Format
//! | bytes | field      | value                                            |
//! |-------|------------|--------------------------------------------------|
//! | 0     | magic      | `0xA7`                                           |
//! | 1     | version    | `1`                                              |
//! | 2     | opcode     | see [`Opcode`]                                   |
//! | 3     | flags      | `0` (no flags are defined in version 1)          |
//! | 4..8  | body_len   | u32, bytes after the header, at most the limit   |
//! | 8..12 | request_id | u32, echoed in the reply; `0` in server pushes   |
//!
//! [`check`] reads only the header and never allocates: it answers "incomplete" until the
//! whole frame is buffered, and rejects a bad magic, version or length as soon as the byte
//! that carries it arrives, so a hostile length is refused before any body is buffered.

use bytes::{BufMut, BytesMut};

use crate::limits::FRAME_HEADER_BYTES;
use crate::ProtoError;

/// First byte of every binary frame. Not ASCII and never the first byte of UTF-8 text, so it
/// also tells the binary dialect from the text dialect.
pub const MAGIC: u8 = 0xA7;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $text:expr; )*) => {
        /// Every opcode of version 1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Opcode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl Opcode {
            /// Every opcode, in table order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];

            /// The opcode with this wire value, if any.
            pub fn from_u8(value: u8) -> Option<Opcode> {
                match value {
                    $( $value => Some(Opcode::$name), )*
                    _ => None,
                }
            }

            /// The opcode's name as written in `spec/wire.md`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Opcode::$name => $text, )*
                }
            }
        }
    };
}

opcodes! {
    /// Liveness check. Empty body. Reply: `PONG`.
    Ping = 0x01, "PING";
    /// Reply to `PING`. Empty body.
    Pong = 0x02, "PONG";
    /// Shared-secret token, when the broker requires one. Reply: `OK`.
    Auth = 0x03, "AUTH";
    /// Broker identity and limits. Empty body. Reply: `INFO_REPLY`.
    Info = 0x04, "INFO";
    /// JSON document answering `INFO`.
    InfoReply = 0x05, "INFO_REPLY";
    /// Health probe. Empty body. Reply: `HEALTH_REPLY`.
    Health = 0x06, "HEALTH";
    /// JSON document answering `HEALTH`.
    HealthReply = 0x07, "HEALTH_REPLY";
    /// A batch of records for one topic. Reply: `PUBLISHED`.
    Publish = 0x10, "PUBLISH";
    /// Partition and offset of every record of a `PUBLISH`, in order.
    Published = 0x11, "PUBLISHED";
    /// Create a topic with chosen settings. Reply: `OK`.
    CreateTopic = 0x12, "CREATE_TOPIC";
    /// Join a consumer group on a topic. Reply: `SUBSCRIBED`, then `DELIVER` pushes.
    Subscribe = 0x20, "SUBSCRIBE";
    /// Reply to `SUBSCRIBE`: the topic's partition count.
    Subscribed = 0x21, "SUBSCRIBED";
    /// Leave a consumer group. Reply: `OK`.
    Unsubscribe = 0x22, "UNSUBSCRIBE";
    /// Set the subscription's credit (most records in flight). Reply: `OK`.
    Credit = 0x23, "CREDIT";
    /// Join (or create) an ephemeral consumer group: the body of `SUBSCRIBE`; the group is
    /// deleted when its last member leaves. Reply: `SUBSCRIBED`, then `DELIVER` pushes.
    SubscribeEphemeral = 0x24, "SUBSCRIBE_EPHEMERAL";
    /// Server push: a batch of records of one topic.
    Deliver = 0x30, "DELIVER";
    /// Acknowledge ranges of delivered offsets. Reply: `OK`.
    Ack = 0x31, "ACK";
    /// Give ranges back for redelivery, optionally after a delay. Reply: `OK`.
    Nack = 0x32, "NACK";
    /// Send ranges straight to the dead-letter topic, no retry. Reply: `OK`.
    Reject = 0x33, "REJECT";
    /// Counters and gauges. Empty body. Reply: `STATS_REPLY`.
    Stats = 0x40, "STATS";
    /// JSON document answering `STATS`.
    StatsReply = 0x41, "STATS_REPLY";
    /// List topics. Empty body. Reply: `TOPICS_REPLY`.
    Topics = 0x42, "TOPICS";
    /// JSON document answering `TOPICS`.
    TopicsReply = 0x43, "TOPICS_REPLY";
    /// List consumer groups. Empty body. Reply: `GROUPS_REPLY`.
    Groups = 0x44, "GROUPS";
    /// JSON document answering `GROUPS`.
    GroupsReply = 0x45, "GROUPS_REPLY";
    /// Delete a consumer group that has no members, with its committed offsets. Reply: `OK`.
    DeleteGroup = 0x46, "DELETE_GROUP";
    /// Success with nothing to return. Empty body.
    Ok = 0x7e, "OK";
    /// A failed request: error code and message.
    Error = 0x7f, "ERROR";
}

/// The fixed header of a binary frame, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Raw opcode byte (may be unknown: that is the body decoder's call, not framing's).
    pub opcode: u8,
    /// Raw flags byte.
    pub flags: u8,
    /// Bytes of body after the header.
    pub body_len: u32,
    /// Request id, echoed in replies.
    pub request_id: u32,
}

impl Header {
    /// Bytes of the whole frame, header included.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_len as usize
    }
}

/// Checks the frame at the start of `buf` without consuming or allocating.
///
/// Returns `Ok(None)` while the frame is incomplete, and the header once all of it is in `buf`.
///
/// # Errors
/// [`ProtoError::BadMagic`], [`ProtoError::BadVersion`] or [`ProtoError::FrameTooLarge`], each
/// as soon as the byte that shows it is buffered. All three break framing.
pub fn check(buf: &[u8], body_bytes_max: u32) -> Result<Option<Header>, ProtoError> {
    if let Some(&magic) = buf.first() {
        if magic != MAGIC {
            return Err(ProtoError::BadMagic(magic));
        }
    }
    if let Some(&version) = buf.get(1) {
        if version != VERSION {
            return Err(ProtoError::BadVersion(version));
        }
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    let body_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if body_len > body_bytes_max {
        return Err(ProtoError::FrameTooLarge {
            body_len: u64::from(body_len),
            max: u64::from(body_bytes_max),
        });
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let header = Header {
        opcode: buf[2],
        flags: buf[3],
        body_len,
        request_id: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    if buf.len() < header.frame_bytes() {
        return Ok(None);
    }
    Ok(Some(header))
}

/// Appends one frame: header, then whatever `body` writes, with `body_len` filled in after.
///
/// # Errors
/// [`ProtoError::FrameTooLarge`] if the body came out larger than `body_bytes_max`; `out` is
/// then left exactly as it was, so a frame with a wrong length never reaches the wire.
pub fn encode_frame(
    out: &mut BytesMut,
    opcode: Opcode,
    request_id: u32,
    body_bytes_max: u32,
    body: impl FnOnce(&mut BytesMut),
) -> Result<(), ProtoError> {
    let start = out.len();
    out.put_u8(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(opcode as u8);
    out.put_u8(0);
    out.put_u32(0);
    out.put_u32(request_id);
    body(out);
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    if body_len as u64 > u64::from(body_bytes_max) {
        out.truncate(start);
        return Err(ProtoError::FrameTooLarge {
            body_len: body_len as u64,
            max: u64::from(body_bytes_max),
        });
    }
    let len_bytes = (body_len as u32).to_be_bytes();
    out[start + 4..start + 8].copy_from_slice(&len_bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_through_their_byte() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(*op as u8), Some(*op));
        }
        assert_eq!(Opcode::from_u8(0x00), None);
    }

    #[test]
    fn check_rejects_a_huge_length_at_the_eighth_byte() {
        let buf = [MAGIC, VERSION, 0x10, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(check(&buf[..7], 1024), Ok(None)));
        assert!(matches!(check(&buf, 1024), Err(ProtoError::FrameTooLarge { .. })));
    }

    #[test]
    fn check_tells_incomplete_from_malformed_for_the_same_prefix() {
        let good = [MAGIC, VERSION, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        for n in 0..good.len() {
            assert!(matches!(check(&good[..n], 1024), Ok(None)), "prefix {n}");
        }
        assert!(check(&good, 1024).unwrap().is_some());
        let bad_version = [MAGIC, 9];
        assert!(matches!(check(&bad_version, 1024), Err(ProtoError::BadVersion(9))));
        assert!(matches!(check(b"G", 1024), Err(ProtoError::BadMagic(b'G'))));
    }

    #[test]
    fn encode_frame_rolls_back_an_oversized_body() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let err = encode_frame(&mut out, Opcode::Publish, 1, 4, |o| o.put_slice(b"12345"));
        assert!(matches!(err, Err(ProtoError::FrameTooLarge { body_len: 5, max: 4 })));
        assert_eq!(&out[..], b"keep");
    }
}
