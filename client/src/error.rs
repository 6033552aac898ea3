//! [`ClientError`]: every way a client call can fail, one variant per cause.
//!
//! The type is `Clone` (I/O errors are shared behind an [`Arc`]) because one failure may
//! answer many records at once: when a `PUBLISH` batch is refused, each of its records gets
//! the same error.

use std::io;
use std::sync::Arc;

use mq_protocol::{ErrorCode, ProtoError};

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed on an open connection.
    #[error("i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// None of the broker addresses accepted a connection (first connect only; a reconnect
    /// that gives up is [`ClientError::GaveUp`]).
    #[error("cannot reach broker at {addrs}: {}", describe_io(source))]
    Unreachable {
        /// The addresses tried, comma-separated.
        addrs: String,
        /// Why the last address failed.
        #[source]
        source: Arc<io::Error>,
    },
    /// The broker answered with an `ERROR` frame.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The named code (`spec/wire.md`, error table).
        code: ErrorCode,
        /// The broker's detail text, for people.
        message: String,
    },
    /// The broker sent bytes this client cannot decode; the connection is dropped.
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtoError),
    /// The broker sent a well-formed reply that does not fit the request (wrong opcode,
    /// wrong record count, undecodable JSON).
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// A request was refused before sending: a bad name or key, an empty batch, a record
    /// larger than the broker accepts. Nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] ProtoError),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// No reply came within the configured request timeout.
    #[error("no reply within {timeout_ms} ms")]
    Timeout {
        /// The timeout that passed, in milliseconds.
        timeout_ms: u64,
    },
    /// Reconnecting failed for as long as the backoff policy allows: the broker is gone.
    #[error("gave up reconnecting after {attempts} attempts: {last_error}")]
    GaveUp {
        /// Connection attempts made (each tries every address once).
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last_error: Box<ClientError>,
    },
}

impl ClientError {
    /// The broker's error code, if this is a broker error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::GaveUp { last_error, .. } => last_error.code(),
            _ => None,
        }
    }

    /// Whether the broker refused this client's credentials: a wrong token
    /// (`AUTH_FAILED`), or no token where the broker requires one (`AUTH_REQUIRED`). Every
    /// connection would be refused the same way, so the client never retries it: a first
    /// connect and a reconnect both report it at once, never as
    /// [`ClientError::GaveUp`]. A program should stop and say so rather than try again.
    pub fn is_auth_refused(&self) -> bool {
        matches!(self.code(), Some(ErrorCode::AUTH_FAILED | ErrorCode::AUTH_REQUIRED))
    }

    /// Whether the connection this error came on is lost, so that a reconnect (and a resend
    /// of what had no reply) may succeed. Errors the broker will repeat on any connection
    /// (a refused token, a frame it finds too large) are not worth a reconnect.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Closed | ClientError::Timeout { .. } => true,
            ClientError::Broker { code, .. } => is_retryable_fatal(*code),
            _ => false,
        }
    }

    pub(crate) fn io(e: io::Error) -> ClientError {
        ClientError::Io(Arc::new(e))
    }

    pub(crate) fn broker(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Broker { code, message: message.into() }
    }
}

/// Fatal broker codes that concern this connection only: another connection (maybe later)
/// can succeed.
pub(crate) fn is_retryable_fatal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SHUTTING_DOWN
            | ErrorCode::SLOW_CONSUMER
            | ErrorCode::IDLE_TIMEOUT
            | ErrorCode::TOO_MANY_CONNECTIONS
    )
}

/// An I/O error as a short lower-case phrase ("connection refused"), the way a command-line
/// tool wants to print it.
pub fn describe_io(e: &io::Error) -> String {
    let phrase = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::NotFound => "host not found",
        _ => return e.to_string(),
    };
    phrase.to_string()
}

/// Results of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_reads_like_a_sentence() {
        let e = ClientError::Unreachable {
            addrs: "127.0.0.1:7420".into(),
            source: Arc::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(e.to_string(), "cannot reach broker at 127.0.0.1:7420: connection refused");
    }

    #[test]
    fn only_connection_errors_call_for_a_reconnect() {
        assert!(ClientError::Closed.is_connection_lost());
        assert!(ClientError::broker(ErrorCode::SHUTTING_DOWN, "").is_connection_lost());
        assert!(!ClientError::broker(ErrorCode::AUTH_FAILED, "").is_connection_lost());
        assert!(!ClientError::broker(ErrorCode::BAD_ARG, "").is_connection_lost());
        let gave_up =
            ClientError::GaveUp { attempts: 3, last_error: Box::new(ClientError::Closed) };
        assert!(!gave_up.is_connection_lost());
    }

    #[test]
    fn refused_tokens_are_named() {
        assert!(ClientError::broker(ErrorCode::AUTH_FAILED, "wrong token").is_auth_refused());
        assert!(ClientError::broker(ErrorCode::AUTH_REQUIRED, "").is_auth_refused());
        assert!(!ClientError::broker(ErrorCode::AUTH_TIMEOUT, "").is_auth_refused());
        assert!(!ClientError::broker(ErrorCode::BAD_ARG, "").is_auth_refused());
        assert!(!ClientError::Closed.is_auth_refused());
    }
}
