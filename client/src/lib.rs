//! Client library of the `mq` broker. Built out in the client issue.
#![deny(missing_docs)]

pub use mq_protocol as protocol;
