//! `mqd`, the broker: one TCP port, both dialects of `mq-protocol`, topics with partitions,
//! consumer groups and at-least-once delivery.
//!
//! - [`core`]: the state machine (topics, groups, in-flight records), no I/O, no clock.
//! - [`storage`]: where partitions keep records ([`storage::memory`] now).
//! - [`event_loop`]: the mio loop that owns the sockets and feeds the core.
//! - [`config`]: settings, with units in every name.
#![deny(missing_docs)]

pub mod checkpointer;
pub mod config;
pub mod core;
pub mod event_loop;
pub mod flusher;
pub mod held;
pub mod storage;

pub use mq_protocol as protocol;
