//! `mqd`, the broker. Built out in the broker issue; for now the crate only links the codec.
#![deny(missing_docs)]

pub use mq_protocol as protocol;
