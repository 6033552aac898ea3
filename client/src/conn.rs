//! One framed connection to a broker: a blocking [`TcpStream`], a read buffer that decoded
//! frames are split from without copying, request ids, and the connect handshake.
//!
//! Everything above this module (producer, consumer, admin) sees whole frames:
//! [`Conn::recv`] returns `(request_id, Response)` pairs, skipping frames with opcodes this
//! client does not know (a newer broker may add some), and turns anything undecodable into
//! [`ClientError::Protocol`]. [`Link`] adds reconnects: it remembers the addresses and
//! settings, and replaces a lost connection following the backoff policy.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info};
use mq_protocol::admin::InfoReply;
use mq_protocol::limits::FRAME_BODY_BYTES_MAX_CEILING;
use mq_protocol::{decode_response, Limits, ProtoError, Request, Response};
use rustix::net::RecvFlags;

use crate::backoff::Backoff;
use crate::error::{ClientError, Result};
use crate::ClientConfig;

/// Most bytes one read takes from the socket: large enough for a whole burst of deliveries.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most bytes one [`Conn::try_recv`] takes from the socket, so a fast stream of deliveries
/// cannot keep it reading (and the read buffer growing) for ever.
const TRY_READ_BYTES_MAX: usize = 16 * READ_CHUNK_BYTES;

/// Bytes the broker reserves around a record's key and value below the frame limit: the
/// `DELIVER` framing and room for a dead-letter header (`spec/README.md`, limits: a record
/// may hold `frame_body_bytes_max − 577` bytes).
pub(crate) const RECORD_OVERHEAD_BYTES: u32 = 577;

/// The broker addresses a client was given, tried in order on every (re)connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    /// Addresses as `host:port` text (or anything that displays as such, like
    /// [`SocketAddr`]). Names are resolved again on every connect.
    pub fn new<A: fmt::Display>(addrs: &[A]) -> Endpoints {
        Endpoints(addrs.iter().map(ToString::to_string).collect())
    }

    /// Opens a TCP connection to the first address that accepts one.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] naming every address and the last failure.
    pub fn connect(&self, timeout: Duration) -> Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no broker address given");
        for text in &self.0 {
            let addrs = match text.to_socket_addrs() {
                Ok(addrs) => addrs,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => {
                        debug!("connect to {addr} failed: {e}");
                        last = e;
                    }
                }
            }
        }
        Err(ClientError::Unreachable { addrs: self.to_string(), source: Arc::new(last) })
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One open binary-dialect connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    scratch: Box<[u8]>,
    write_buf: BytesMut,
    next_id: u32,
    read_limits: Limits,
    /// Largest frame body this connection sends: the configured value, lowered to what the
    /// broker reported in `INFO`.
    pub(crate) frame_body_bytes_max: u32,
    /// The broker's `INFO` document, read during the handshake.
    pub(crate) info: InfoReply,
    read_timeout: Option<Duration>,
    peer: SocketAddr,
}

impl Conn {
    /// Connects to the first reachable address, then authenticates (if a token is
    /// configured) and reads `INFO`, pipelined in one round trip.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], or the handshake's failure.
    pub(crate) fn open(endpoints: &Endpoints, config: &ClientConfig) -> Result<Conn> {
        let stream = endpoints.connect(config.connect_timeout)?;
        stream.set_nodelay(true).map_err(ClientError::io)?;
        let peer = stream.peer_addr().map_err(ClientError::io)?;
        let mut conn = Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            write_buf: BytesMut::new(),
            next_id: 1,
            read_limits: Limits {
                frame_body_bytes_max: FRAME_BODY_BYTES_MAX_CEILING,
                ..Limits::default()
            },
            frame_body_bytes_max: config.frame_body_bytes_max,
            info: InfoReply::default(),
            read_timeout: None,
            peer,
        };
        conn.handshake(config)?;
        debug!("connected to {peer} ({} storage)", conn.info.storage);
        Ok(conn)
    }

    fn handshake(&mut self, config: &ClientConfig) -> Result<()> {
        let timeout = config.request_timeout;
        let auth_id = match &config.auth_token {
            Some(token) => Some(self.send(&Request::Auth { token: token.clone() })?),
            None => None,
        };
        let info_id = self.send(&Request::Info)?;
        self.flush()?;
        if let Some(id) = auth_id {
            match self.reply_to(id, timeout)? {
                Response::Ok => {}
                other => return Err(unexpected("AUTH", &other)),
            }
        }
        let info: InfoReply = match self.reply_to(info_id, timeout)? {
            Response::Info(json) => parse_json("INFO", &json)?,
            other => return Err(unexpected("INFO", &other)),
        };
        if info.frame_body_bytes_max > 0 {
            self.frame_body_bytes_max = self.frame_body_bytes_max.min(info.frame_body_bytes_max);
            self.read_limits.frame_body_bytes_max = info.frame_body_bytes_max;
        }
        self.info = info;
        Ok(())
    }

    /// The broker's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A fresh non-zero request id (0 is reserved for pushes).
    pub(crate) fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Validates and encodes `request` into the write buffer; [`Conn::flush`] sends it.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] for a request the broker would refuse or a frame too
    /// large; nothing is buffered then.
    pub(crate) fn send(&mut self, request: &Request) -> Result<u32> {
        request.validate().map_err(ClientError::InvalidRequest)?;
        let id = self.next_id();
        request
            .encode(id, self.frame_body_bytes_max, &mut self.write_buf)
            .map_err(ClientError::InvalidRequest)?;
        Ok(id)
    }

    /// Writes already-encoded frames straight to the socket (after anything buffered).
    pub(crate) fn write_frames(&mut self, frames: &[u8]) -> Result<()> {
        self.flush()?;
        self.stream.write_all(frames).map_err(ClientError::io)
    }

    /// Writes everything buffered.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).map_err(ClientError::io)?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// The next frame, waiting until `deadline` at most; `Ok(None)` if none came by then.
    ///
    /// # Errors
    /// [`ClientError::Closed`] at end of stream, [`ClientError::Io`], or
    /// [`ClientError::Protocol`] for bytes that are no valid reply.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Result<Option<(u32, Response)>> {
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(Some(frame));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.set_read_timeout(left)?;
            match self.read_some() {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(io_or_closed(e)),
            }
        }
    }

    /// A frame already received, without waiting: decodes what is buffered, after taking
    /// whatever the kernel holds for this socket.
    ///
    /// # Errors
    /// As [`Conn::recv`].
    pub(crate) fn try_recv(&mut self) -> Result<Option<(u32, Response)>> {
        if let Some(frame) = self.decode()? {
            return Ok(Some(frame));
        }
        // `MSG_DONTWAIT` rather than switching the socket to non-blocking and back: one
        // system call per read instead of three.
        let mut taken = 0;
        while taken < TRY_READ_BYTES_MAX {
            match rustix::net::recv(&self.stream, &mut self.scratch[..], RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Err(io_or_closed(io::ErrorKind::UnexpectedEof.into())),
                Ok((n, _)) => {
                    self.read_buf.extend_from_slice(&self.scratch[..n]);
                    taken += n;
                }
                Err(e) if e == rustix::io::Errno::AGAIN => break,
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(io_or_closed(e.into())),
            }
        }
        self.decode()
    }

    /// A frame already in the read buffer, without reading the socket.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for bytes that are no valid reply.
    pub(crate) fn buffered(&mut self) -> Result<Option<(u32, Response)>> {
        self.decode()
    }

    /// Waits for the reply to request `id`, failing on any other frame but pushes (which
    /// are dropped: callers that subscribe read frames themselves).
    pub(crate) fn reply_to(&mut self, id: u32, timeout: Duration) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline)? {
                Some((rid, Response::Error { code, message })) if rid == id || rid == 0 => {
                    return Err(ClientError::broker(code, message))
                }
                Some((rid, response)) if rid == id => return Ok(response),
                Some((0, Response::Deliver(_))) => {}
                Some((rid, other)) => {
                    return Err(ClientError::UnexpectedReply(format!(
                        "reply {:?} to request {rid} while waiting for {id}",
                        other.opcode()
                    )))
                }
                None => {
                    return Err(ClientError::Timeout { timeout_ms: timeout.as_millis() as u64 })
                }
            }
        }
    }

    fn decode(&mut self) -> Result<Option<(u32, Response)>> {
        loop {
            let decoded = match decode_response(&mut self.read_buf, &self.read_limits) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return Ok(None),
                Err(e) => return Err(ClientError::Protocol(e)),
            };
            match decoded.result {
                Ok(response) => return Ok(Some((decoded.request_id, response))),
                // A newer broker may add opcodes; their frames are skipped (spec: decode rules).
                Err(ProtoError::UnknownOpcode(op)) => debug!("skipped frame with opcode {op:#x}"),
                Err(e) => return Err(ClientError::Protocol(e)),
            }
        }
    }

    /// Reads once into the scratch buffer and appends what came to the read buffer. Going
    /// through a scratch buffer costs a copy of the bytes received; reading straight into
    /// the read buffer would instead cost zeroing a whole chunk before every read, which
    /// is more whenever a read returns less than a chunk (measured: 10% of a consumer's
    /// time went to that zeroing).
    fn read_some(&mut self) -> io::Result<()> {
        match self.stream.read(&mut self.scratch) {
            Ok(0) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                self.read_buf.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        // setsockopt costs a syscall; skip it when the timeout is about the same.
        let close =
            self.read_timeout.is_some_and(|t| t.abs_diff(timeout) < Duration::from_millis(1));
        if !close {
            self.stream.set_read_timeout(Some(timeout)).map_err(ClientError::io)?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        || e.kind() == io::ErrorKind::Interrupted
}

fn io_or_closed(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ClientError::Closed,
        _ => ClientError::io(e),
    }
}

pub(crate) fn unexpected(what: &str, response: &Response) -> ClientError {
    ClientError::UnexpectedReply(format!("{what} answered with {}", response.opcode().name()))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, json: &[u8]) -> Result<T> {
    serde_json::from_slice(json)
        .map_err(|e| ClientError::UnexpectedReply(format!("{what} document: {e}")))
}

/// A connection that comes back: the addresses and settings to reopen it with, and the
/// backoff policy that paces reopening.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) endpoints: Endpoints,
    pub(crate) config: ClientConfig,
    conn: Option<Conn>,
    reconnects: u64,
}

impl Link {
    /// Opens the first connection: one pass over the addresses, no retry.
    pub(crate) fn open(endpoints: Endpoints, config: ClientConfig) -> Result<Link> {
        let conn = Conn::open(&endpoints, &config)?;
        Ok(Link { endpoints, config, conn: Some(conn), reconnects: 0 })
    }

    /// The open connection, reconnecting first if it was lost.
    pub(crate) fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.reconnect()?;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The open connection, if there is one (no reconnect).
    pub(crate) fn current(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// Drops the current connection (after an error on it).
    pub(crate) fn lose(&mut self, why: &ClientError) {
        if let Some(conn) = self.conn.take() {
            info!("lost connection to {}: {why}", conn.peer());
        }
    }

    /// Successful reconnects so far.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Opens a new connection, retrying with backoff until the policy gives up.
    ///
    /// # Errors
    /// [`ClientError::GaveUp`] with the last failure, or a handshake error that no retry
    /// can fix (a refused token).
    pub(crate) fn reconnect(&mut self) -> Result<&mut Conn> {
        self.conn = None;
        let mut backoff = Backoff::new(self.config.backoff.clone());
        loop {
            match Conn::open(&self.endpoints, &self.config) {
                Ok(conn) => {
                    info!(
                        "reconnected to {} after {} failed attempts",
                        conn.peer(),
                        backoff.attempts()
                    );
                    self.reconnects += 1;
                    return Ok(self.conn.insert(conn));
                }
                Err(e) if !is_worth_retrying(&e) => return Err(e),
                Err(e) => match backoff.fail(Instant::now()) {
                    Some(delay) => {
                        debug!(
                            "reconnect attempt {} failed: {e}; next in {delay:?}",
                            backoff.attempts()
                        );
                        std::thread::sleep(delay);
                    }
                    None => {
                        return Err(ClientError::GaveUp {
                            attempts: backoff.attempts(),
                            last_error: Box::new(e),
                        })
                    }
                },
            }
        }
    }
}

/// Whether another connection attempt may succeed where this one failed. A refused token
/// (`AUTH_FAILED`, `AUTH_REQUIRED`) is not: the broker refuses every connection alike.
fn is_worth_retrying(e: &ClientError) -> bool {
    let transient = matches!(e, ClientError::Unreachable { .. } | ClientError::Protocol(_))
        || e.is_connection_lost();
    transient && !e.is_auth_refused()
}
