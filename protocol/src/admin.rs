//! JSON documents carried by the admin replies (`INFO_REPLY`, `HEALTH_REPLY`, `STATS_REPLY`,
//! `TOPICS_REPLY`, `GROUPS_REPLY`).
//!
//! Each reply's body is one compact JSON object. Readers must ignore fields they do not know
//! (every struct here has `#[serde(default)]`), so a newer broker may add fields within
//! protocol version 1. `spec/wire.md` ("Admin documents") lists every field and its unit.

use serde::{Deserialize, Serialize};

/// `INFO_REPLY`: who the broker is and the limits it enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InfoReply {
    /// Always `"mqd"`.
    pub server: String,
    /// Broker version (semver).
    pub version: String,
    /// Wire protocol version spoken (1).
    pub protocol: u8,
    /// Largest frame body (and text payload) accepted, in bytes.
    pub frame_body_bytes_max: u32,
    /// Longest text command line accepted, in bytes.
    pub line_bytes_max: usize,
    /// Partitions of an auto-created topic.
    pub partitions_default: u32,
    /// `"memory"` or `"disk"`.
    pub storage: String,
    /// Durability mode: `"always"`, `"interval:<ms>"`, `"never"` or `"none"` (memory).
    pub fsync: String,
    /// Default acknowledgement timeout before redelivery, in milliseconds.
    pub ack_timeout_ms: u64,
    /// Deliveries of one record before it is dead-lettered.
    pub max_deliveries: u32,
    /// Whether `AUTH` must be the first request.
    pub auth_required: bool,
}

/// `HEALTH_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthReply {
    /// `"ok"`, `"degraded"` (serving, but storage reports errors) or `"shutting_down"`.
    pub status: String,
    /// Time since the broker started, in milliseconds.
    pub uptime_ms: u64,
    /// Open client connections.
    pub connections: u64,
    /// Why the status is not `"ok"`, if it is not.
    pub detail: Option<String>,
}

/// `STATS_REPLY`: counters (since start) and gauges (now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsReply {
    /// Time since the broker started, in milliseconds.
    pub uptime_ms: u64,
    /// Open client connections (gauge).
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused or closed for an error since start.
    pub connections_rejected: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Per topic.
    pub topics: Vec<TopicStats>,
    /// Per consumer group and topic.
    pub groups: Vec<GroupStats>,
}

/// One topic in `STATS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicStats {
    /// Topic name.
    pub name: String,
    /// Records published since start.
    pub records_in: u64,
    /// Payload and key bytes published since start.
    pub bytes_in: u64,
    /// Records delivered since start (redeliveries included).
    pub records_out: u64,
    /// Payload and key bytes delivered since start.
    pub bytes_out: u64,
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
}

/// One partition in `STATS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionStats {
    /// Partition number.
    pub partition: u32,
    /// Offset the next record will get (the high watermark).
    pub next_offset: u64,
    /// Oldest offset still held (after retention).
    pub oldest_offset: u64,
    /// Bytes held by the partition's storage.
    pub bytes_stored: u64,
    /// Segment files (0 in memory mode).
    pub segments: u64,
}

/// One (group, topic) pair in `STATS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupStats {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Records published but not yet acknowledged by the group, over all partitions.
    pub lag: u64,
    /// Records delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Records acknowledged since start.
    pub acked: u64,
    /// Redeliveries since start (timeout, NACK or member gone).
    pub redelivered: u64,
    /// Records sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// Members now.
    pub members: Vec<MemberStats>,
    /// Per partition.
    pub partitions: Vec<GroupPartitionStats>,
    /// `"durable"` or `"ephemeral"` (deleted when its last member leaves).
    pub kind: String,
    /// When the group last lost its last member, in milliseconds since the Unix epoch;
    /// `None` while it has members, and always for an ephemeral group.
    pub empty_since_ms: Option<u64>,
    /// Milliseconds until the broker deletes the empty durable group (group expiry);
    /// `None` while it has members, for an ephemeral group, or when groups never expire.
    pub expires_in_ms: Option<u64>,
}

/// One member of a group in `STATS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberStats {
    /// Broker-assigned connection id.
    pub id: u64,
    /// Peer address.
    pub peer: String,
    /// Partitions owned.
    pub partitions: Vec<u32>,
    /// Credit (most records in flight).
    pub credit: u32,
    /// Records in flight to this member.
    pub in_flight: u64,
    /// Why deliveries to it are paused (`"credit"`, `"slow_consumer"`), if they are.
    pub paused: Option<String>,
}

/// One partition of a group in `STATS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupPartitionStats {
    /// Partition number.
    pub partition: u32,
    /// Committed offset: the lowest offset not yet acknowledged.
    pub committed: u64,
    /// Next offset to deliver for the first time.
    pub next_delivery: u64,
    /// `next_offset - committed` of the partition.
    pub lag: u64,
    /// Records of this partition in flight.
    pub in_flight: u64,
    /// Connection id of the member that owns the partition, if any.
    pub owner: Option<u64>,
}

/// `TOPICS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicsReply {
    /// Every topic, by name.
    pub topics: Vec<TopicInfo>,
}

/// One topic in `TOPICS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Retention by size per partition, in bytes (0: unlimited).
    pub retention_bytes: u64,
    /// Retention by age, in milliseconds (0: unlimited).
    pub retention_ms: u64,
    /// Records held, over all partitions.
    pub records: u64,
}

/// `GROUPS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupsReply {
    /// Every (group, topic) pair.
    pub groups: Vec<GroupInfo>,
}

/// One (group, topic) pair in `GROUPS_REPLY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupInfo {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Members now.
    pub members: u32,
    /// Records not yet acknowledged by the group.
    pub lag: u64,
    /// Records in flight.
    pub in_flight: u64,
    /// `"durable"` or `"ephemeral"`, as in [`GroupStats::kind`].
    pub kind: String,
    /// As [`GroupStats::empty_since_ms`].
    pub empty_since_ms: Option<u64>,
    /// As [`GroupStats::expires_in_ms`].
    pub expires_in_ms: Option<u64>,
}
