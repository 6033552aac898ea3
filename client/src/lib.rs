//! Client library of the `mq` broker (`mqd`): blocking sockets, no async runtime.
//!
//! - [`Producer`]: batches records per topic (by count, bytes and linger), pipelines many
//!   `PUBLISH` frames, and reports each record's partition and offset or a typed error.
//! - [`Consumer`]: one member of a consumer group; keeps the broker fed with credit and
//!   acknowledges in batches of offset ranges.
//! - [`Client`]: admin calls (`stats`, `topics`, `groups`, `health`, `info`,
//!   `create_topic`), and a factory for producers and consumers on the same addresses.
//!
//! Every connection speaks the binary dialect of `spec/wire.md` through the `mq-protocol`
//! codec. A client is given one or more broker addresses and connects to the first that
//! answers. When a connection is lost, producers and consumers reconnect on their own, with
//! exponential backoff and full jitter ([`BackoffConfig`]), and report
//! [`ClientError::GaveUp`] once the policy's bounds (attempts, total time) are spent; the
//! producer then sends again what had no reply, the consumer subscribes again. A broker
//! that refuses the token ([`ClientError::is_auth_refused`]) is not retried: the connect or
//! reconnect that met the refusal reports it at once. Delivery is
//! at least once in both directions: a record may be stored twice (a resent batch) and
//! delivered twice (a redelivery), never dropped without an error saying so.
//!
//! Errors are [`ClientError`] values; nothing the broker sends makes the client panic.
//!
//! # Examples
//!
//! Publish and read back, with a broker on the default port:
//!
//! ```no_run
//! use std::time::Duration;
//! use mq_client::{Client, ClientConfig, ConsumerConfig, ProducerConfig, StartPosition};
//!
//! let client = Client::connect(&["127.0.0.1:7420"], ClientConfig::default())?;
//!
//! let mut producer = client.producer(ProducerConfig::default())?;
//! let seq = producer.send("telemetry", Some(b"gpu-0"), b"{\"util\": 97}")?;
//! for outcome in producer.flush()? {
//!     let placement = outcome.result?;
//!     assert_eq!(outcome.seq, seq);
//!     println!("stored at partition {} offset {}", placement.partition, placement.offset);
//! }
//!
//! let config = ConsumerConfig { start: StartPosition::Earliest, ..ConsumerConfig::default() };
//! let mut consumer = client.subscribe("telemetry", "readers", config)?;
//! for message in consumer.poll(Duration::from_secs(1))? {
//!     println!("{}:{} {:?}", message.partition, message.offset, message.value);
//!     consumer.ack(&message)?;
//! }
//! consumer.commit()?;
//! # Ok::<(), mq_client::ClientError>(())
//! ```
//!
//! Admin calls:
//!
//! ```no_run
//! use mq_client::{Client, ClientConfig};
//!
//! let mut client = Client::connect(&["127.0.0.1:7420", "127.0.0.1:7421"], ClientConfig::default())?;
//! for group in client.groups()?.groups {
//!     println!("{} on {}: lag {}", group.group, group.topic, group.lag);
//! }
//! # Ok::<(), mq_client::ClientError>(())
//! ```
#![deny(missing_docs, missing_debug_implementations)]

mod admin;
pub mod backoff;
mod conn;
pub mod consumer;
mod error;
pub mod producer;

use std::time::Duration;

pub use admin::TopicSettings;
pub use backoff::{Backoff, BackoffConfig};
pub use conn::Endpoints;
pub use consumer::{Consumer, ConsumerConfig, ConsumerStats, Message};
pub use error::{describe_io, ClientError, Result};
pub use mq_protocol as protocol;
pub use mq_protocol::{ErrorCode, Placement, Record, StartPosition};
pub use producer::{Outcome, Producer, ProducerConfig, ProducerStats};

use conn::Link;
use mq_protocol::admin::InfoReply;

/// Settings shared by every connection of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Time to wait for one TCP connect, per address.
    pub connect_timeout: Duration,
    /// Time to wait for a reply before the connection is considered lost.
    pub request_timeout: Duration,
    /// How reconnects are paced and when they stop.
    pub backoff: BackoffConfig,
    /// Shared secret sent with `AUTH` first on every connection, if the broker needs one.
    pub auth_token: Option<String>,
    /// Largest frame body to send; lowered to the broker's limit read from `INFO`.
    pub frame_body_bytes_max: u32,
}

impl Default for ClientConfig {
    /// 2 s connect timeout, 10 s request timeout, the default backoff, no token, the
    /// protocol's default frame limit.
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            auth_token: None,
            frame_body_bytes_max: mq_protocol::limits::FRAME_BODY_BYTES_MAX_DEFAULT,
        }
    }
}

/// A connection for admin calls, and a factory of producers and consumers that use the
/// same addresses and settings (each on a connection of its own).
#[derive(Debug)]
pub struct Client {
    link: Link,
}

impl Client {
    /// Connects to the first of `addrs` that answers (`"host:port"` strings or
    /// [`std::net::SocketAddr`]s), reads the broker's `INFO`, and authenticates if
    /// `config.auth_token` is set.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] if no address accepts a connection (no retry here: the
    /// backoff applies to reconnects), or the handshake's failure.
    pub fn connect<A: std::fmt::Display>(addrs: &[A], config: ClientConfig) -> Result<Client> {
        Ok(Client { link: Link::open(Endpoints::new(addrs), config)? })
    }

    /// The addresses this client connects to.
    pub fn endpoints(&self) -> &Endpoints {
        &self.link.endpoints
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.link.config
    }

    /// The `INFO` document the broker sent when this client connected (use
    /// [`Client::info`] to read it afresh).
    pub fn broker_info(&mut self) -> Option<&InfoReply> {
        self.link.current().map(|conn| &conn.info)
    }

    /// A producer on a new connection.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::open(self.new_link()?, config)
    }

    /// A consumer of `topic` in `group` on a new connection.
    ///
    /// # Errors
    /// As [`Consumer::subscribe`].
    pub fn subscribe(&self, topic: &str, group: &str, config: ConsumerConfig) -> Result<Consumer> {
        Consumer::open(self.new_link()?, topic, group, config)
    }

    fn new_link(&self) -> Result<Link> {
        Link::open(self.link.endpoints.clone(), self.link.config.clone())
    }
}
