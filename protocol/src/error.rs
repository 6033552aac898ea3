//! The shared error-code table and the decoder's error type.
//!
//! Every error either dialect can report is an [`ErrorCode`]: a number on the wire (binary
//! `ERROR` frame) and a name in the text dialect (`-ERR NAME message`). Whether an error closes
//! the connection is a property of the code, fixed in the table, so a client in any language
//! knows from the code alone whether its connection survives. `spec/wire.md` has the table.

use std::fmt;

/// A named error code. A newtype over the wire value so that codes added by a newer broker
/// still decode (their name prints as `UNKNOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, fatal = $fatal:expr; )*) => {
        impl ErrorCode {
            $( $(#[$doc])* pub const $name: ErrorCode = ErrorCode($value); )*

            /// Every code this version knows, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's name as printed in the text dialect, or `UNKNOWN`.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $value => stringify!($name), )*
                    _ => "UNKNOWN",
                }
            }

            /// Whether the broker closes the connection after sending this error.
            /// Unknown codes are treated as fatal, the safe reading for a client.
            pub fn is_fatal(self) -> bool {
                match self.0 {
                    $( $value => $fatal, )*
                    _ => true,
                }
            }

            /// The code with this name (as printed by the text dialect), if any.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name {
                    $( stringify!($name) => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The first byte of a connection is neither `0xA7` nor an ASCII letter.
    BAD_START = 100, fatal = true;
    /// A binary frame does not start with the magic byte `0xA7`.
    BAD_MAGIC = 101, fatal = true;
    /// A binary frame has a protocol version this broker does not speak.
    BAD_VERSION = 102, fatal = true;
    /// A binary frame's `body_len`, or a text `PUB` payload length, is above the limit.
    FRAME_TOO_LARGE = 103, fatal = true;
    /// A text command line is above the limit (no `\n` within it).
    LINE_TOO_LONG = 104, fatal = true;
    /// The text dialect lost its framing: bad payload length or payload terminator.
    PARSE = 105, fatal = true;
    /// A binary frame has non-zero flag bits this version does not define.
    BAD_FLAGS = 106, fatal = false;
    /// A binary frame has an opcode that is not a request.
    UNKNOWN_OPCODE = 107, fatal = false;
    /// A text line starts with a verb that does not exist.
    UNKNOWN_VERB = 108, fatal = false;
    /// A frame body does not match its opcode's layout (short, trailing bytes, bad UTF-8).
    MALFORMED = 109, fatal = false;
    /// A field is well-formed but its value is invalid (a name, a number out of range).
    BAD_ARG = 110, fatal = false;
    /// The broker requires `AUTH` as the first request.
    AUTH_REQUIRED = 200, fatal = true;
    /// The `AUTH` token is wrong.
    AUTH_FAILED = 201, fatal = true;
    /// No `AUTH` arrived before the deadline.
    AUTH_TIMEOUT = 202, fatal = true;
    /// The broker is at its connection limit.
    TOO_MANY_CONNECTIONS = 203, fatal = true;
    /// The connection did not read its deliveries fast enough and was cut off.
    SLOW_CONSUMER = 204, fatal = true;
    /// The broker is shutting down.
    SHUTTING_DOWN = 205, fatal = true;
    /// The connection sent nothing for longer than the idle timeout.
    IDLE_TIMEOUT = 206, fatal = true;
    /// The topic does not exist (and the request does not create topics).
    NO_SUCH_TOPIC = 300, fatal = false;
    /// `CREATE_TOPIC` for a topic that exists with other settings.
    TOPIC_EXISTS = 301, fatal = false;
    /// The broker is at its topic limit.
    TOO_MANY_TOPICS = 302, fatal = false;
    /// The partition count asked for is above the limit.
    TOO_MANY_PARTITIONS = 303, fatal = false;
    /// `ACK`, `NACK`, `REJECT`, `CREDIT` or `UNSUBSCRIBE` without a matching subscription.
    NOT_SUBSCRIBED = 304, fatal = false;
    /// `SUBSCRIBE` to a topic this connection is already subscribed to.
    ALREADY_SUBSCRIBED = 305, fatal = false;
    /// Nothing in the ranges of an `ACK`, `NACK` or `REJECT` is outstanding for the group.
    NOT_IN_FLIGHT = 306, fatal = false;
    /// A partition number at or above the topic's partition count.
    NO_SUCH_PARTITION = 307, fatal = false;
    /// The broker is at its consumer-group limit.
    TOO_MANY_GROUPS = 308, fatal = false;
    /// `DELETE_GROUP` for a (topic, group) the broker does not have.
    NO_SUCH_GROUP = 309, fatal = false;
    /// `DELETE_GROUP` for a group that still has members.
    GROUP_ACTIVE = 310, fatal = false;
    /// A durable `SUBSCRIBE` to an ephemeral group, or `SUBSCRIBE_EPHEMERAL` to a durable one.
    GROUP_KIND_MISMATCH = 311, fatal = false;
    /// The disk is full. For a `PUBLISH`, records before the failing one may be stored.
    STORAGE_FULL = 400, fatal = false;
    /// The storage failed. For a `PUBLISH`, records before the failing one may be stored.
    STORAGE_ERROR = 401, fatal = false;
    /// A bug in the broker; the request was not carried out.
    INTERNAL = 402, fatal = false;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes could not be decoded. Incomplete input is *not* an error: decoders return
/// `Ok(None)` for it and wait for more bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The connection's first byte selects no dialect.
    #[error("first byte 0x{0:02x} is neither 0xA7 (binary) nor an ASCII letter (text)")]
    BadStart(u8),
    /// A binary frame starts with something other than `0xA7`.
    #[error("frame starts with 0x{0:02x}, expected magic 0xa7")]
    BadMagic(u8),
    /// A binary frame's version byte is not 1.
    #[error("protocol version {0} not supported (this broker speaks 1)")]
    BadVersion(u8),
    /// A binary frame's body length is above the limit.
    #[error("body_len {body_len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length the header declared.
        body_len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A text line is longer than the limit.
    #[error("line exceeds the limit of {max} bytes")]
    LineTooLong {
        /// The limit in force.
        max: usize,
    },
    /// The text dialect lost its framing.
    #[error("{0}")]
    Parse(String),
    /// A binary frame sets flag bits this version does not define.
    #[error("flags 0x{0:02x} not supported (must be 0)")]
    BadFlags(u8),
    /// A binary frame's opcode is not one this side accepts.
    #[error("opcode 0x{0:02x} is not a request")]
    UnknownOpcode(u8),
    /// A text line's verb is not known.
    #[error("unknown verb {0:?}")]
    UnknownVerb(String),
    /// A body does not match its layout.
    #[error("{0}")]
    Malformed(String),
    /// A field value is invalid.
    #[error("{0}")]
    BadArg(String),
}

impl ProtoError {
    /// The code this error is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::BadStart(_) => ErrorCode::BAD_START,
            ProtoError::BadMagic(_) => ErrorCode::BAD_MAGIC,
            ProtoError::BadVersion(_) => ErrorCode::BAD_VERSION,
            ProtoError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            ProtoError::LineTooLong { .. } => ErrorCode::LINE_TOO_LONG,
            ProtoError::Parse(_) => ErrorCode::PARSE,
            ProtoError::BadFlags(_) => ErrorCode::BAD_FLAGS,
            ProtoError::UnknownOpcode(_) => ErrorCode::UNKNOWN_OPCODE,
            ProtoError::UnknownVerb(_) => ErrorCode::UNKNOWN_VERB,
            ProtoError::Malformed(_) => ErrorCode::MALFORMED,
            ProtoError::BadArg(_) => ErrorCode::BAD_ARG,
        }
    }

    /// Whether the connection this came on must be closed (its framing is lost).
    pub fn is_fatal(&self) -> bool {
        self.code().is_fatal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.0), "duplicate value {}", code.0);
            assert_eq!(ErrorCode::from_name(code.name()), Some(*code));
        }
        assert_eq!(ErrorCode(9999).name(), "UNKNOWN");
        assert!(ErrorCode(9999).is_fatal());
    }

    #[test]
    fn framing_errors_are_fatal_and_request_errors_are_not() {
        assert!(ProtoError::FrameTooLarge { body_len: 1, max: 0 }.is_fatal());
        assert!(ProtoError::BadStart(0).is_fatal());
        assert!(!ProtoError::UnknownOpcode(0x55).is_fatal());
        assert!(!ProtoError::Malformed("x".into()).is_fatal());
    }
}
