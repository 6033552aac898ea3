//! The group checkpoint: every group's committed offset per partition and the delivery
//! counts of records not yet acknowledged, so a restart resumes each group where it acked
//! and `max_deliveries` keeps counting. Written atomically by the storage (temp file, fsync,
//! rename) at most every checkpoint interval, and only when it changed.
//!
//! ```json
//! {"version":1,"groups":[{"topic":"t","group":"g","partitions":[{"committed":5,"attempts":[[5,2]]}]}]}
//! ```
//!
//! A group without members also carries `empty_since_ms`, so the group expiry goes on
//! counting across a restart. Ephemeral groups are not saved: they end with their members,
//! and a restart ends every member.

use log::{info, warn};
use serde::{Deserialize, Serialize};

use mq_protocol::GroupKind;

use super::group::{EmptySince, Group};
use super::{Core, Now};
use crate::storage::StorageError;

/// What the warnings about a checkpoint that cannot be used say happens instead: no group is
/// restored, each is created anew by its next `SUBSCRIBE` (as a group never seen), and the
/// first checkpoint written replaces the file.
const NOT_RESTORED: &str = "no group is restored; each group starts at the position its next SUBSCRIBE asks for, and the next checkpoint replaces the file";

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    groups: Vec<GroupEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupEntry {
    topic: String,
    group: String,
    partitions: Vec<PartitionEntry>,
    /// When the group lost its last member (wall-clock ms); absent while it has members, and
    /// in checkpoints written before group expiry existed (readers then count from start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    empty_since_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionEntry {
    committed: u64,
    /// (offset, deliveries so far) of records at or above `committed` not yet acknowledged.
    attempts: Vec<(u64, u32)>,
}

impl Core {
    /// Writes the checkpoint if it changed since the last one.
    ///
    /// # Errors
    /// Storage failures (the previous checkpoint stays in place, and the next call writes).
    pub fn checkpoint(&mut self) -> Result<(), StorageError> {
        if let Some(bytes) = self.checkpoint_changed() {
            if let Err(e) = self.storage.save_checkpoint(&bytes) {
                self.forget_checkpoint();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The checkpoint, serialized, if it changed since the last one taken; the caller
    /// writes it (the event loop hands it to [`crate::checkpointer::Checkpointer`]).
    pub fn checkpoint_changed(&mut self) -> Option<Vec<u8>> {
        let checkpoint = Checkpoint {
            version: 1,
            groups: self
                .groups
                .values()
                .filter(|g| g.kind == GroupKind::Durable)
                .map(|g| GroupEntry {
                    topic: g.topic.clone(),
                    group: g.name.clone(),
                    partitions: (0..g.partition_count())
                        .map(|p| PartitionEntry {
                            committed: g.committed(p),
                            attempts: g.attempts(p),
                        })
                        .collect(),
                    empty_since_ms: g.empty.map(|e| e.wall_ms),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&checkpoint).expect("checkpoints serialize");
        if bytes == self.last_checkpoint {
            return None;
        }
        self.last_checkpoint = bytes.clone();
        Some(bytes)
    }

    /// Forgets the last checkpoint taken (its write failed), so the next one is written
    /// even if nothing changed.
    pub fn forget_checkpoint(&mut self) {
        self.last_checkpoint.clear();
    }

    /// A function that writes checkpoints from another thread, if the storage keeps them.
    pub fn checkpoint_saver(&self) -> Option<crate::storage::CheckpointSaver> {
        self.storage.checkpoint_saver()
    }

    /// Recreates the groups of a checkpoint, without members, at their committed offsets.
    pub(super) fn restore_checkpoint(&mut self, bytes: &[u8], now: Now) {
        let checkpoint: Checkpoint = match serde_json::from_slice(bytes) {
            Ok(c) => c,
            Err(e) => {
                warn!("group checkpoint unreadable ({e}); {NOT_RESTORED}");
                return;
            }
        };
        if checkpoint.version != 1 {
            warn!(
                "group checkpoint has version {}, this broker reads 1; {NOT_RESTORED}",
                checkpoint.version
            );
            return;
        }
        for entry in checkpoint.groups {
            let Some(topic) = self.topics.get_mut(&entry.topic) else {
                warn!(
                    "checkpoint names group {} of unknown topic {}; skipped",
                    entry.group, entry.topic
                );
                continue;
            };
            let ack_timeout = self
                .config
                .group_ack_timeouts
                .get(&entry.group)
                .copied()
                .unwrap_or(self.config.ack_timeout);
            let mut group = Group::new(
                entry.group.clone(),
                entry.topic.clone(),
                GroupKind::Durable,
                &topic.logs,
                mq_protocol::StartPosition::Earliest,
                ack_timeout,
            );
            for (p, part) in entry.partitions.iter().enumerate().take(topic.logs.len()) {
                // After a power loss with `--fsync interval` or `never`, the checkpoint (always
                // fsynced) can be ahead of the recovered log; offsets past the end will be
                // given to new records, so the group must not skip them.
                let end = topic.logs[p].next_offset();
                if part.committed > end {
                    warn!(
                        "group {} on {} partition {p}: checkpoint at {} is past the end of the log ({end}); resuming at {end}",
                        entry.group, entry.topic, part.committed
                    );
                }
                // Delivery counts of offsets past the end belong to records that are gone;
                // new records will take those offsets and must start at attempt 1.
                let attempts: Vec<(u64, u32)> =
                    part.attempts.iter().copied().filter(|(offset, _)| *offset < end).collect();
                group.restore(p as u32, part.committed.min(end), &attempts);
            }
            group.empty = Some(empty_since(entry.empty_since_ms, now));
            if !topic.groups.contains(&entry.group) {
                topic.groups.push(entry.group.clone());
            }
            info!("restored group {} on {} from the checkpoint", entry.group, entry.topic);
            self.groups.insert((entry.topic, entry.group), group);
        }
    }
}

/// A restored group has no member. It has been empty since the checkpoint says (the wall
/// time between then and now counts towards its expiry), or, if the checkpoint does not say
/// (it had members when the broker stopped, or an older broker wrote it), since this start.
fn empty_since(saved_wall_ms: Option<u64>, now: Now) -> EmptySince {
    let wall_ms = saved_wall_ms.unwrap_or(now.wall_ms);
    // A stamp in the future (the clock was set back) counts as empty from now.
    let before = std::time::Duration::from_millis(now.wall_ms.saturating_sub(wall_ms));
    EmptySince { at: now.mono, before, wall_ms }
}
