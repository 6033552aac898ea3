//! Every size limit of the wire protocol, in one place, each named with its unit.
//!
//! The broker may lower or raise the configurable ones (within their ceilings); the rest are
//! fixed by the format itself. `spec/wire.md` ("Limits") lists the same numbers.

/// Bytes in the fixed header that starts every binary frame.
pub const FRAME_HEADER_BYTES: usize = 12;

/// Default for the largest frame body a peer accepts (the header's `body_len`): 1 MiB.
pub const FRAME_BODY_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;

/// The largest value a broker may be configured to accept as `frame_body_bytes_max`: 64 MiB.
pub const FRAME_BODY_BYTES_MAX_CEILING: u32 = 64 * 1024 * 1024;

/// Default for the longest text-dialect command line, terminator included: 4 KiB.
pub const LINE_BYTES_MAX_DEFAULT: usize = 4096;

/// The longest topic or group name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;

/// The longest record key, in bytes.
pub const KEY_BYTES_MAX: usize = 255;

/// The longest shared-secret token in `AUTH`, in bytes.
pub const TOKEN_BYTES_MAX: usize = 256;

/// The longest error message carried in an `ERROR` frame, in bytes (longer ones are cut).
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// The most partitions a topic may have, whatever the broker's configuration.
pub const PARTITIONS_MAX: u32 = 4096;

/// Smallest encoding of one record in a `PUBLISH` body: key_len u16 + value_len u32.
pub const PUBLISH_RECORD_BYTES_MIN: usize = 2 + 4;

/// Smallest encoding of one record in a `DELIVER` body:
/// partition u32 + offset u64 + attempt u32 + timestamp_ms u64 + key_len u16 + value_len u32.
pub const DELIVER_RECORD_BYTES_MIN: usize = 4 + 8 + 4 + 8 + 2 + 4;

/// Encoding of one placement in a `PUBLISHED` body: partition u32 + offset u64.
pub const PLACEMENT_BYTES: usize = 4 + 8;

/// Encoding of one offset range in `ACK`, `NACK` and `REJECT`: partition u32 + first u64 + last u64.
pub const RANGE_BYTES: usize = 4 + 8 + 8;

/// Limits a decoder enforces; the configurable subset of the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest binary frame body accepted, in bytes; also the largest text payload.
    pub frame_body_bytes_max: u32,
    /// Longest text command line accepted, terminator included, in bytes.
    pub line_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_body_bytes_max: FRAME_BODY_BYTES_MAX_DEFAULT,
            line_bytes_max: LINE_BYTES_MAX_DEFAULT,
        }
    }
}

const _: () = assert!(FRAME_BODY_BYTES_MAX_DEFAULT <= FRAME_BODY_BYTES_MAX_CEILING);
const _: () = assert!(LINE_BYTES_MAX_DEFAULT > NAME_BYTES_MAX * 2 + KEY_BYTES_MAX + 64);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(NAME_BYTES_MAX <= u16::MAX as usize);
