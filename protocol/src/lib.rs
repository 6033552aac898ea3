//! The wire protocol of the `mq` broker: one TCP port, two dialects, one request type.
//!
//! - [`frame`]: the 12-byte binary header, [`frame::check`] (incomplete vs malformed without
//!   allocating) and opcodes.
//! - [`Request`] and [`Response`]: every message, with binary body encode and decode.
//! - [`text`]: the same requests and responses as text lines for `nc`.
//! - [`codec`]: per-connection dialect detection and frame-at-a-time decoding.
//! - [`ErrorCode`]: the one table of named errors both dialects share.
//! - [`limits`]: every size limit, named with its unit.
//! - [`hash`]: the partitioning hash.
//!
//! No sockets, no I/O: decoders take a `BytesMut` read buffer, return `Ok(None)` while a
//! frame is incomplete, check declared lengths before reserving anything, and hand payloads
//! on as zero-copy [`bytes::Bytes`] slices of the buffer. `spec/wire.md` and `spec/text.md`
//! define every byte; `spec/vectors/` holds golden vectors that the tests load.
#![deny(missing_docs, missing_debug_implementations)]

pub mod admin;
pub mod codec;
pub mod error;
mod fields;
pub mod frame;
pub mod hash;
pub mod limits;
pub mod names;
pub mod request;
pub mod response;
pub mod text;

pub use codec::{decode_request, decode_response, Decoded, Dialect, ServerCodec};
pub use error::{ErrorCode, ProtoError};
pub use frame::{Opcode, MAGIC, VERSION};
pub use limits::Limits;
pub use request::{CreateTopic, GroupKind, OffsetRange, Record, Request, StartPosition};
pub use response::{Deliver, DeliverWriter, Delivery, Placement, Response};
