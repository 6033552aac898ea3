//! A topic: its partitions' logs, retention, the round-robin cursor for unkeyed records and
//! the names of the groups that consume it.

use bytes::Bytes;
use mq_protocol::hash::partition_for_key;

use crate::storage::{PartitionLog, Retention, StorageError};

/// Counters of one topic, since start.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TopicCounters {
    pub records_in: u64,
    pub bytes_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
}

#[derive(Debug)]
pub(crate) struct Topic {
    pub name: String,
    pub logs: Vec<Box<dyn PartitionLog>>,
    pub retention: Retention,
    /// Next partition for a record without a key.
    round_robin: u32,
    /// Groups consuming this topic, by name.
    pub groups: Vec<String>,
    pub counters: TopicCounters,
}

impl Topic {
    pub fn new(name: String, logs: Vec<Box<dyn PartitionLog>>, retention: Retention) -> Topic {
        assert!(!logs.is_empty(), "a topic has at least one partition");
        Topic {
            name,
            logs,
            retention,
            round_robin: 0,
            groups: Vec::new(),
            counters: TopicCounters::default(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    /// The partition a record goes to: by key hash, or round-robin without a key.
    pub fn choose_partition(&mut self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(key) => partition_for_key(key, self.partitions()),
            None => {
                let p = self.round_robin;
                self.round_robin = (self.round_robin + 1) % self.partitions();
                p
            }
        }
    }

    /// Appends to partition `p` and counts it.
    pub fn append(
        &mut self,
        p: u32,
        timestamp_ms: u64,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<u64, StorageError> {
        let bytes = (key.as_ref().map_or(0, Bytes::len) + value.len()) as u64;
        let offset = self.logs[p as usize].append(timestamp_ms, key, value)?;
        self.counters.records_in += 1;
        self.counters.bytes_in += bytes;
        Ok(offset)
    }

    /// Records held over all partitions.
    pub fn records_held(&self) -> u64 {
        self.logs.iter().map(|l| l.next_offset() - l.oldest_offset()).sum()
    }
}
