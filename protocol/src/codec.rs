//! Per-connection codecs: which dialect a connection speaks, and frame-at-a-time decoding.
//!
//! The broker holds one [`ServerCodec`] per connection. It latches the dialect from the
//! connection's first byte, decodes requests from the read buffer and encodes responses in
//! the same dialect. Clients use [`decode_response`] and [`Request::encode`].

use bytes::BytesMut;

use crate::frame::{check, MAGIC};
use crate::limits::Limits;
use crate::request::Request;
use crate::response::Response;
use crate::{text, ProtoError};

/// A decoded frame or line: the request id it came with and either the value or the
/// non-fatal error that rejected it (its bytes are consumed; the connection goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The frame's request id; 0 in the text dialect and in pushes.
    pub request_id: u32,
    /// The value, or why it was rejected.
    pub result: Result<T, ProtoError>,
}

/// The two dialects of the one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Length-prefixed binary frames, first byte `0xA7`.
    Binary,
    /// Text lines, first byte an ASCII letter.
    Text,
}

impl Dialect {
    /// The dialect a connection whose first byte is `first` speaks.
    ///
    /// # Errors
    /// [`ProtoError::BadStart`] for any byte other than `0xA7` or an ASCII letter.
    pub fn detect(first: u8) -> Result<Dialect, ProtoError> {
        match first {
            MAGIC => Ok(Dialect::Binary),
            b if b.is_ascii_alphabetic() => Ok(Dialect::Text),
            b => Err(ProtoError::BadStart(b)),
        }
    }
}

/// The broker side of one connection.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    dialect: Option<Dialect>,
    limits: Limits,
}

impl ServerCodec {
    /// A codec for a new connection; the dialect is chosen by the first byte decoded.
    pub fn new(limits: Limits) -> ServerCodec {
        ServerCodec { dialect: None, limits }
    }

    /// The connection's dialect, once its first byte has arrived.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Decodes the next request from the start of `buf`, consuming its bytes.
    ///
    /// # Errors
    /// A fatal [`ProtoError`]: reply with it (see [`ServerCodec::encode`]) and close.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded<Request>>, ProtoError> {
        let dialect = match self.dialect {
            Some(d) => d,
            None => {
                let Some(&first) = buf.first() else { return Ok(None) };
                let d = Dialect::detect(first)?;
                self.dialect = Some(d);
                d
            }
        };
        match dialect {
            Dialect::Binary => decode_request(buf, &self.limits),
            Dialect::Text => text::decode_request(buf, &self.limits),
        }
    }

    /// Appends `response` in the connection's dialect (text before the dialect is known, so
    /// that `BAD_START` reaches a person typing).
    ///
    /// A response too large for the frame limit is replaced by an `INTERNAL` error frame: the
    /// broker never sends a frame its peer would have to refuse.
    pub fn encode(&self, request_id: u32, response: &Response, out: &mut BytesMut) {
        match self.dialect {
            Some(Dialect::Binary) => {
                if let Err(e) = response.encode(request_id, self.limits.frame_body_bytes_max, out) {
                    let error = Response::Error {
                        code: crate::ErrorCode::INTERNAL,
                        message: e.to_string(),
                    };
                    error
                        .encode(request_id, u32::MAX, out)
                        .expect("error frames have no size limit");
                }
            }
            Some(Dialect::Text) | None => text::encode_response(response, out),
        }
    }
}

/// Decodes one binary request frame from the start of `buf`.
///
/// # Errors
/// Fatal framing errors from [`check`].
pub fn decode_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Decoded<Request>>, ProtoError> {
    decode_frame(buf, limits, Request::decode_body)
}

/// Decodes one binary response or push frame from the start of `buf`.
///
/// # Errors
/// Fatal framing errors from [`check`].
pub fn decode_response(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Decoded<Response>>, ProtoError> {
    decode_frame(buf, limits, Response::decode_body)
}

fn decode_frame<T>(
    buf: &mut BytesMut,
    limits: &Limits,
    decode_body: fn(u8, bytes::Bytes) -> Result<T, ProtoError>,
) -> Result<Option<Decoded<T>>, ProtoError> {
    // Nothing is reserved for a frame announced but not received: the buffer grows only with
    // bytes that arrive, so idle connections with bare headers cost no frame-sized memory.
    let Some(header) = check(buf, limits.frame_body_bytes_max)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(header.frame_bytes()).freeze();
    let body = frame.split_off(crate::limits::FRAME_HEADER_BYTES);
    let result = if header.flags != 0 {
        Err(ProtoError::BadFlags(header.flags))
    } else {
        decode_body(header.opcode, body)
    };
    Ok(Some(Decoded { request_id: header.request_id, result }))
}
