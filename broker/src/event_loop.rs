//! The mio event loop: one thread owns the listener and every connection, reads requests,
//! feeds them to the [`Core`] with the current time, and writes what the core answers.
//!
//! Each turn: wait for readiness (or the next timer), accept a bounded number of
//! connections, read and decode a bounded amount from each ready connection, run timers, let
//! the core deliver, make appends durable (group commit: one sync per turn for every
//! connection and partition), then encode the outputs and write them. Replies are written
//! after the sync, so a `PUBLISHED` never goes out before its records are durable.
//!
//! Backpressure: a connection whose output buffer passes `write_buf_bytes_max` gets no more
//! deliveries and has its input left unread until it drains; if it stays stuck for
//! `slow_consumer` it is disconnected with `SLOW_CONSUMER`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use mq_protocol::{ErrorCode, Limits, Response, ServerCodec};
use slab::Slab;

use crate::checkpointer::Checkpointer;
use crate::config::{Config, FsyncMode, StorageKind};
use crate::core::{ConnId, Core, Now, Output};
use crate::flusher::Flusher;
use crate::held::Held;
use crate::storage::{DiskStorage, MemoryStorage, Storage};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONN: usize = 3;

/// Connections accepted per turn at most, so a flood cannot starve established ones.
const ACCEPTS_PER_TURN: usize = 64;
/// Bytes read from one connection per turn at most.
const READ_BYTES_PER_TURN: usize = 1024 * 1024;
/// Requests decoded from one connection per turn at most.
const FRAMES_PER_TURN: usize = 256;
/// Read granularity.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// With `--fsync always`, a turn that read at most this many bytes while no flush was
/// running is flushed on the loop thread (see `Broker::group_commit`).
const INLINE_FLUSH_READ_BYTES_MAX: usize = 16 * 1024;
/// Timer resolution ceiling: ack timeouts fire at most this late.
const TICK_MS_MAX: u64 = 100;
/// Retention runs this often.
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// How long a closing connection may take to flush its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long shutdown waits for output to drain.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// Kernel send and receive buffer asked for each connection.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Events handled per poll.
const EVENTS_CAPACITY: usize = 1024;

#[derive(Debug)]
struct Conn {
    id: ConnId,
    stream: TcpStream,
    peer: String,
    codec: ServerCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The peer closed its side or sent a fatal error: read nothing more.
    read_closed: bool,
    /// Close once `write_buf` is flushed (or `CLOSE_GRACE` has passed).
    closing_since: Option<Instant>,
    /// Closing for an error (fatal protocol error, slow consumer, write failure): nothing
    /// more is sent after the error. A connection closing because its peer finished sending
    /// still gets the replies to what it sent.
    failed: bool,
    /// Set while the output buffer is over the limit.
    paused_since: Option<Instant>,
    /// In the ready queue (more input may be waiting).
    queued: bool,
}

/// A way to stop a broker running in another thread (tests, embedding).
#[derive(Debug, Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the broker to shut down gracefully.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A bound, not yet running, broker.
pub struct Broker {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    by_id: HashMap<ConnId, usize>,
    ready: VecDeque<usize>,
    /// The listener may have connections waiting (accepting stopped at the per-turn bound).
    accept_pending: bool,
    next_id: ConnId,
    core: Core,
    config: Config,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    limits: Limits,
    /// Shared read buffer of `READ_CHUNK_BYTES`.
    scratch: Vec<u8>,
    tick_every: Duration,
    last_tick: Instant,
    last_retention: Instant,
    last_sync: Instant,
    last_checkpoint: Instant,
    /// Flushes on another thread (`--fsync always` on disk), overlapping the next turn.
    flusher: Option<Flusher>,
    /// Writes the group checkpoint on another thread (disk storage).
    checkpointer: Option<Checkpointer>,
    /// A checkpoint serialized while a flush was outstanding, with the epoch it waits for.
    checkpoint_waiting: Option<(u64, Vec<u8>)>,
    /// Handle for flushing small turns on the loop thread (`--fsync always` on disk).
    inline_sync: Option<crate::storage::FlushFn>,
    /// Bytes read from every connection this turn.
    turn_read_bytes: usize,
    /// Output of turns waiting for their flush, with the epochs (`--fsync always`).
    held: Held<Vec<Output>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addr", &self.local_addr)
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl Broker {
    /// Binds the listen address and sets up the core.
    ///
    /// # Errors
    /// Bind failures, or a storage that cannot start.
    pub fn bind(config: Config) -> io::Result<Broker> {
        let listener = TcpListener::bind(config.listen)?;
        let storage: Box<dyn Storage> = match config.storage {
            StorageKind::Memory => Box::new(MemoryStorage),
            StorageKind::Disk => Box::new(
                DiskStorage::open(&config.data_dir, config.disk.clone())
                    .map_err(io::Error::other)?,
            ),
        };
        Broker::with_storage(config, listener, storage)
    }

    fn with_storage(
        config: Config,
        mut listener: TcpListener,
        storage: Box<dyn Storage>,
    ) -> io::Result<Broker> {
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let local_addr = listener.local_addr()?;
        let now = Now::real();
        let mut timeouts: Vec<Duration> =
            config.core.group_ack_timeouts.values().copied().collect();
        timeouts.push(config.core.ack_timeout);
        let shortest = timeouts.into_iter().min().unwrap_or(Duration::from_secs(5));
        let tick_every =
            (shortest / 10).clamp(Duration::from_millis(5), Duration::from_millis(TICK_MS_MAX));
        let limits = Limits {
            frame_body_bytes_max: config.core.frame_body_bytes_max,
            line_bytes_max: config.line_bytes_max,
        };
        if !config.listen.ip().is_loopback() && config.core.auth_token.is_none() {
            warn!("listening on {} without --auth-token: anyone who can reach it can publish and consume", config.listen);
        }
        let core = Core::new(config.core.clone(), storage, now).map_err(io::Error::other)?;
        // `always` holds each turn's output for its flush; `interval` only asks for a flush
        // every interval. Both flush on the flusher thread, so the event loop never waits on
        // the disk (an inline flush every 100 ms was the whole p99.9 of `interval:100`).
        let flusher = match (config.fsync, core.flush_fn()) {
            (FsyncMode::Always | FsyncMode::Interval(_), Some(flush)) => {
                Some(Flusher::start(flush, waker.clone())?)
            }
            _ => None,
        };
        let inline_sync = match config.fsync {
            FsyncMode::Always if flusher.is_some() => core.flush_fn(),
            _ => None,
        };
        let checkpointer = core.checkpoint_saver().map(Checkpointer::start).transpose()?;
        Ok(Broker {
            poll,
            listener: Some(listener),
            local_addr,
            conns: Slab::new(),
            by_id: HashMap::new(),
            ready: VecDeque::new(),
            accept_pending: false,
            next_id: 1,
            core,
            config,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            limits,
            scratch: vec![0; READ_CHUNK_BYTES],
            tick_every,
            last_tick: now.mono,
            last_retention: now.mono,
            last_sync: now.mono,
            last_checkpoint: now.mono,
            flusher,
            checkpointer,
            checkpoint_waiting: None,
            inline_sync,
            turn_read_bytes: 0,
            held: Held::default(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops this broker from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { stop: self.stop.clone(), waker: self.waker.clone() }
    }

    /// Shuts down gracefully on SIGINT or SIGTERM.
    ///
    /// # Errors
    /// If the signal handlers cannot be installed.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs until stopped, then shuts down gracefully: stops accepting, finishes the turn,
    /// syncs storage, flushes what it can of every connection's output, and returns.
    ///
    /// # Errors
    /// Poll failures (not connection errors, which close only their connection).
    pub fn run(mut self) -> io::Result<()> {
        info!("mqd listening on {} ({} storage)", self.local_addr, self.config.core.storage_name);
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.stop.load(Ordering::SeqCst) {
            let busy = !self.ready.is_empty() || self.accept_pending;
            let timeout = if busy { Duration::ZERO } else { self.until_tick() };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => self.drain_signals(),
                    Token(t) => self.on_conn_event(t - FIRST_CONN, event.is_writable()),
                }
            }
            if self.accept_pending {
                self.accept();
            }
            self.turn();
        }
        self.shutdown();
        Ok(())
    }

    fn until_tick(&self) -> Duration {
        (self.last_tick + self.tick_every).saturating_duration_since(Instant::now())
    }

    fn drain_signals(&mut self) {
        if let Some(signals) = &mut self.signals {
            for signal in signals.pending() {
                info!("signal {signal}: shutting down");
                self.stop.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Accepts up to `ACCEPTS_PER_TURN` connections. The listener is edge-triggered, so if
    /// the bound stops it before `WouldBlock` it is marked to be tried again next turn.
    fn accept(&mut self) {
        self.accept_pending = false;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else { return };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ECONNABORTED and friends concern one connection; EMFILE stays until
                    // connections close, so try again next turn rather than spin now.
                    warn!("accept failed: {e}");
                    self.accept_pending = true;
                    return;
                }
            };
            if self.conns.len() >= self.config.connections_max {
                let line = format!(
                    "-ERR TOO_MANY_CONNECTIONS limit of {} reached\r\n",
                    self.config.connections_max
                );
                let _ = stream.write(line.as_bytes());
                self.core.count_rejected();
                debug!("refused {peer}: connection limit");
                continue;
            }
            let _ = stream.set_nodelay(true);
            // Bigger kernel buffers let one turn read (and group-commit) more of a pipelining
            // publisher's batches: with the default, a turn saw about 220 KB.
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&stream, SOCKET_BUFFER_BYTES);
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, SOCKET_BUFFER_BYTES);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register {peer}: {e}");
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            entry.insert(Conn {
                id,
                stream,
                peer: peer.to_string(),
                codec: ServerCodec::new(self.limits),
                read_buf: BytesMut::new(),
                write_buf: BytesMut::new(),
                read_closed: false,
                closing_since: None,
                failed: false,
                paused_since: None,
                queued: false,
            });
            self.by_id.insert(id, key);
            self.core.connect(id, peer.to_string(), Now::real());
            self.enqueue(key);
            debug!("conn {id} from {peer}");
        }
        self.accept_pending = true;
    }

    fn enqueue(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    fn on_conn_event(&mut self, key: usize, writable: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if writable {
            self.flush(key);
        }
        self.enqueue(key);
    }

    /// One turn after the events: input, timers, deliveries, sync, output.
    fn turn(&mut self) {
        let now = Now::real();
        self.turn_read_bytes = 0;
        let ready: Vec<usize> = self.ready.drain(..).collect();
        for key in ready {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.queued = false;
            }
            if self.read_and_handle(key, now) {
                self.enqueue(key);
            }
        }
        if now.mono >= self.last_tick + self.tick_every {
            self.last_tick = now.mono;
            self.core.tick(now);
        }
        if now.mono >= self.last_retention + RETENTION_EVERY {
            self.last_retention = now.mono;
            self.core.apply_retention(now);
        }
        self.core.pump(now);
        let outputs = self.core.take_outputs();
        match &self.flusher {
            Some(_) if self.held_output() => self.group_commit(outputs),
            Some(flusher) => {
                if let FsyncMode::Interval(every) = self.config.fsync {
                    if now.mono >= self.last_sync + every && self.core.take_dirty() {
                        self.last_sync = now.mono;
                        flusher.request(self.held.next_epoch());
                    }
                }
                for (epoch, result) in flusher.finished() {
                    if let Err(e) = &result {
                        warn!("flush {epoch} failed: {e}; records acknowledged in that interval may be lost");
                    }
                    self.core.note_flush(result);
                }
                self.apply_outputs(outputs, true);
            }
            None => {
                let synced = self.sync_if_due(now.mono);
                self.apply_outputs(outputs, synced);
            }
        }
        if now.mono >= self.last_checkpoint + self.config.checkpoint_every {
            self.last_checkpoint = now.mono;
            self.checkpoint();
        }
        self.submit_waiting_checkpoint();
        self.flush_all(now.mono);
    }

    /// Hands a changed group checkpoint to the writer thread (or writes it here when the
    /// storage has no writer). A failed write is written again at the next interval.
    fn checkpoint(&mut self) {
        match &self.checkpointer {
            Some(writer) => {
                if writer.take_failure() {
                    self.core.forget_checkpoint();
                }
                if let Some(bytes) = self.core.checkpoint_changed() {
                    if self.held_output() && !self.held.idle() {
                        // Dead letters appended this turn must be on disk before a checkpoint
                        // that counts their source records as settled.
                        self.checkpoint_waiting = Some((self.held.epoch(), bytes));
                    } else {
                        self.checkpoint_waiting = None;
                        writer.submit(bytes);
                    }
                }
            }
            None => {
                if let Err(e) = self.core.checkpoint() {
                    warn!("group checkpoint not written: {e}");
                }
            }
        }
    }

    /// Whether turns' output waits for its flush (`--fsync always` with a flusher).
    fn held_output(&self) -> bool {
        self.flusher.is_some() && self.config.fsync == FsyncMode::Always
    }

    /// Hands the checkpoint that waited for a flush to the writer once that flush is done.
    fn submit_waiting_checkpoint(&mut self) {
        if self.checkpoint_waiting.as_ref().is_some_and(|(epoch, _)| *epoch <= self.held.flushed())
        {
            let (_, bytes) = self.checkpoint_waiting.take().expect("checked");
            if let Some(writer) = &self.checkpointer {
                writer.submit(bytes);
            }
        }
    }

    /// `--fsync always` with a flusher: makes the turn's appends durable before its output
    /// goes out. A small turn while no flush is running is flushed here and answered at once,
    /// as a single-threaded server would: at low rates that saves two thread hand-offs per
    /// flush (at 10,000 records/s, p99 from about 1.25 to 0.96 ms). Anything else goes to
    /// the flusher thread and the turn's output is held until its epoch is done, so the
    /// loop reads the next turn while the disk works (twice the throughput at full load).
    fn group_commit(&mut self, outputs: Vec<Output>) {
        let Some(flusher) = &self.flusher else { return };
        if self.core.take_dirty() {
            let idle = self.held.idle();
            let epoch = self.held.next_epoch();
            if idle && self.turn_read_bytes <= INLINE_FLUSH_READ_BYTES_MAX {
                if let Some(flush) = self.inline_sync.as_mut() {
                    let result = flush().map_err(|e| e.to_string());
                    let ok = result.is_ok();
                    if let Err(e) = &result {
                        warn!(
                            "flush {epoch} failed: {e}; its publishes are answered STORAGE_ERROR"
                        );
                    }
                    self.core.note_flush(result);
                    // Nothing is held: with no flush running, `release_flushed` released
                    // every held turn.
                    self.held.flushed_inline();
                    self.apply_outputs(outputs, ok);
                    return;
                }
            }
            flusher.request(epoch);
        }
        if !outputs.is_empty() {
            self.held.hold(outputs);
        }
        self.release_flushed();
    }

    /// Releases held output whose flush has finished, in order (see [`Held::finish`]: a
    /// failed flush fails every turn held so far; their `PUBLISHED` replies become errors).
    fn release_flushed(&mut self) {
        let Some(flusher) = &self.flusher else { return };
        let results = flusher.finished();
        for outputs in self.held.release_done() {
            self.apply_outputs(outputs, true);
        }
        for (done, result) in results {
            if let Err(e) = &result {
                warn!("flush {done} failed: {e}; the publishes of every turn held until now are answered STORAGE_ERROR");
            }
            for (outputs, synced) in self.held.finish(done, result.is_ok()) {
                self.apply_outputs(outputs, synced);
            }
            self.core.note_flush(result);
        }
    }

    /// Group commit: with `--fsync always` every append of the turn is flushed here, before
    /// any reply of the turn is written. Returns false if the flush failed.
    fn sync_if_due(&mut self, now: Instant) -> bool {
        let due = match self.config.fsync {
            FsyncMode::Always => true,
            FsyncMode::Interval(every) => now >= self.last_sync + every,
            FsyncMode::Never => false,
        };
        if !due {
            return true;
        }
        self.last_sync = now;
        match self.core.sync() {
            Ok(()) => true,
            Err(e) => {
                warn!("storage sync failed: {e}");
                false
            }
        }
    }

    /// Reads and handles what one connection sent, within the per-turn bounds. Returns
    /// whether more input may be waiting (the connection goes back on the ready queue).
    fn read_and_handle(&mut self, key: usize, now: Now) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        if conn.closing_since.is_some() || conn.write_buf.len() > self.config.write_buf_bytes_max {
            return false;
        }
        let (read_more, eof, read_bytes) = read_some(conn, &self.limits, &mut self.scratch);
        self.core.count_bytes(read_bytes as u64, 0);
        self.turn_read_bytes += read_bytes;
        let mut frames = 0;
        let id = conn.id;
        while frames < FRAMES_PER_TURN {
            let conn = &mut self.conns[key];
            match conn.codec.decode(&mut conn.read_buf) {
                Ok(Some(decoded)) => {
                    frames += 1;
                    match decoded.result {
                        Ok(request) => self.core.handle(id, decoded.request_id, request, now),
                        Err(e) => {
                            debug!("conn {id} request rejected: {} {e}", e.code());
                            self.core.reject_request(
                                id,
                                decoded.request_id,
                                e.code(),
                                e.to_string(),
                            );
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let conn = &mut self.conns[key];
                    conn.read_closed = true;
                    conn.read_buf.clear();
                    self.core.close(id, e.code(), e.to_string());
                    return false;
                }
            }
        }
        let conn = &mut self.conns[key];
        if eof {
            conn.read_closed = true;
            if conn.read_buf.is_empty() || frames < FRAMES_PER_TURN {
                if !conn.read_buf.is_empty() {
                    debug!(
                        "conn {} closed with {} bytes of an unfinished frame",
                        conn.id,
                        conn.read_buf.len()
                    );
                }
                conn.closing_since.get_or_insert(now.mono);
                return false;
            }
        }
        read_more || frames >= FRAMES_PER_TURN
    }

    /// Encodes the core's outputs. If this turn's flush failed (`synced` false), a publish
    /// may not be durable, so its reply says so instead of giving offsets.
    fn apply_outputs(&mut self, outputs: Vec<Output>, synced: bool) {
        for output in outputs {
            match output {
                Output::Send { conn, request_id, response } => {
                    let response = match response {
                        Response::Published(_)
                            if !synced && self.config.fsync == FsyncMode::Always =>
                        {
                            Response::Error {
                                code: ErrorCode::STORAGE_ERROR,
                                message:
                                    "flush to disk failed; the records may or may not be stored"
                                        .into(),
                            }
                        }
                        other => other,
                    };
                    let Some(&key) = self.by_id.get(&conn) else { continue };
                    let c = &mut self.conns[key];
                    if !c.failed {
                        c.codec.encode(request_id, &response, &mut c.write_buf);
                    }
                }
                Output::Close { conn, code, message } => {
                    let Some(&key) = self.by_id.get(&conn) else { continue };
                    let c = &mut self.conns[key];
                    warn!("conn {} ({}) closed: {code} {message}", c.id, c.peer);
                    c.codec.encode(0, &Response::Error { code, message }, &mut c.write_buf);
                    c.read_closed = true;
                    c.failed = true;
                    c.closing_since.get_or_insert(Instant::now());
                    self.core.count_rejected();
                }
            }
        }
    }

    /// Writes what each connection has buffered; updates pauses; closes what is done.
    fn flush_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.flush(key);
            let limit = self.config.write_buf_bytes_max;
            let conn = &mut self.conns[key];
            let over = conn.write_buf.len() > limit;
            match (over, conn.paused_since) {
                (true, None) => {
                    conn.paused_since = Some(now);
                    self.core.set_paused(conn.id, true);
                }
                (false, Some(_)) if conn.write_buf.len() <= limit / 2 => {
                    conn.paused_since = None;
                    self.core.set_paused(conn.id, false);
                }
                (true, Some(since)) if now.duration_since(since) >= self.config.slow_consumer => {
                    warn!(
                        "conn {} ({}) closed: {} output stuck above {limit} bytes for {} ms",
                        conn.id,
                        conn.peer,
                        ErrorCode::SLOW_CONSUMER,
                        self.config.slow_consumer.as_millis()
                    );
                    conn.write_buf.clear();
                    let error = Response::Error {
                        code: ErrorCode::SLOW_CONSUMER,
                        message: "output buffer full".into(),
                    };
                    conn.codec.encode(0, &error, &mut conn.write_buf);
                    conn.read_closed = true;
                    conn.failed = true;
                    conn.closing_since = Some(now - CLOSE_GRACE);
                    self.core.count_rejected();
                }
                _ => {}
            }
            let conn = &self.conns[key];
            if let Some(since) = conn.closing_since {
                // A peer that finished sending still gets the replies held for a flush, however
                // long the flush takes; the grace for writing them starts once released. Only
                // closing connections look through the held output.
                let id = conn.id;
                let waiting = !conn.failed
                    && self.held.any(|outputs| outputs.iter().any(|o| output_conn(o) == id));
                let drained = conn.write_buf.is_empty();
                if waiting {
                    self.conns[key].closing_since = Some(now);
                } else if drained || now.duration_since(since) >= CLOSE_GRACE {
                    self.close(key);
                }
            }
        }
    }

    /// Writes as much of a connection's output as the socket takes.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut written = 0u64;
        while !conn.write_buf.is_empty() {
            match conn.stream.write(&conn.write_buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = conn.write_buf.split_to(n);
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("conn {} write failed: {e}", conn.id);
                    conn.write_buf.clear();
                    conn.read_closed = true;
                    conn.failed = true;
                    conn.closing_since.get_or_insert(Instant::now());
                    break;
                }
            }
        }
        if conn.write_buf.is_empty() && conn.write_buf.capacity() > 4 * READ_CHUNK_BYTES {
            conn.write_buf = BytesMut::new();
        }
        self.core.count_bytes(0, written);
    }

    fn close(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        self.by_id.remove(&conn.id);
        self.core.disconnect(conn.id, Now::real());
        debug!("conn {} ({}) closed", conn.id, conn.peer);
    }

    fn shutdown(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.turn();
        // Wait for the flusher to finish what it owes, then release what it held.
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        while !self.held.is_empty() && Instant::now() < deadline {
            self.release_flushed();
            std::thread::sleep(Duration::from_millis(1));
        }
        if !self.held.is_empty() {
            warn!("the last flush did not finish in time; its replies are not sent");
            self.held.clear();
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        while Instant::now() < deadline && self.conns.iter().any(|(_, c)| !c.write_buf.is_empty()) {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.flush(key);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Sockets close without leaving their groups: what is in flight stays in flight in the
        // final checkpoint (redelivered after the restart with its delivery count) instead of
        // being counted as a consumer failure.
        for mut conn in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        // The writer finishes what it holds first, so the final checkpoint below is the last.
        // A checkpoint still waiting for its flush was never written: the final one must be,
        // even if it is the same document.
        let waited = self.checkpoint_waiting.take().is_some();
        if self.checkpointer.take().is_some_and(Checkpointer::finish) || waited {
            self.core.forget_checkpoint();
        }
        match self.core.close_storage() {
            Ok(()) => info!("mqd stopped cleanly"),
            Err(e) => {
                warn!("mqd stopped, but closing storage failed ({e}); the next start will recover")
            }
        }
    }
}

/// The connection an output goes to.
fn output_conn(output: &Output) -> ConnId {
    let (Output::Send { conn, .. } | Output::Close { conn, .. }) = output;
    *conn
}

/// Reads from a connection until `WouldBlock`, EOF, or a per-turn bound. Returns whether the
/// socket may still have input, whether EOF was seen, and the bytes read.
///
/// Reads go through one shared `scratch` buffer and only the bytes received are appended to
/// the connection's buffer, so an idle connection holds no read memory.
fn read_some(conn: &mut Conn, limits: &Limits, scratch: &mut [u8]) -> (bool, bool, usize) {
    if conn.read_closed {
        return (false, false, 0);
    }
    let buf_max = mq_protocol::limits::FRAME_HEADER_BYTES
        + limits.frame_body_bytes_max as usize
        + READ_CHUNK_BYTES;
    let mut total = 0;
    loop {
        if total >= READ_BYTES_PER_TURN || conn.read_buf.len() >= buf_max {
            return (true, false, total);
        }
        match conn.stream.read(scratch) {
            Ok(0) => return (false, true, total),
            Ok(n) => {
                conn.read_buf.extend_from_slice(&scratch[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (false, false, total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("conn {} read failed: {e}", conn.id);
                return (false, true, total);
            }
        }
    }
}

/// A broker running in a background thread (tests, embedding).
#[derive(Debug)]
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Binds and starts a broker in a new thread.
    ///
    /// # Errors
    /// Bind or setup failures.
    pub fn start(config: Config) -> io::Result<Running> {
        let broker = Broker::bind(config)?;
        let addr = broker.local_addr();
        let stop = broker.stop_handle();
        let thread = std::thread::Builder::new().name("mqd".into()).spawn(move || broker.run())?;
        Ok(Running { addr, stop, thread: Some(thread) })
    }

    /// Stops the broker gracefully and waits for it.
    ///
    /// # Errors
    /// What the broker's run returned.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop.stop();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("broker thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
