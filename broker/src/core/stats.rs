//! The admin documents: INFO, HEALTH, STATS, TOPICS and GROUPS as compact JSON.

use bytes::Bytes;
use mq_protocol::admin::{
    GroupInfo, GroupPartitionStats, GroupStats, GroupsReply, HealthReply, InfoReply, MemberStats,
    PartitionStats, StatsReply, TopicInfo, TopicStats, TopicsReply,
};

use super::{Core, Now};

/// Broker-wide counters, since start.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BrokerCounters {
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("admin documents always serialize"))
}

impl Core {
    pub(crate) fn info_json(&self) -> Bytes {
        json(&InfoReply {
            server: "mqd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: mq_protocol::VERSION,
            frame_body_bytes_max: self.config.frame_body_bytes_max,
            line_bytes_max: self.config.line_bytes_max,
            partitions_default: self.config.partitions_default,
            storage: self.config.storage_name.clone(),
            fsync: self.config.fsync_name.clone(),
            ack_timeout_ms: self.config.ack_timeout.as_millis() as u64,
            max_deliveries: self.config.max_deliveries,
            auth_required: self.config.auth_token.is_some(),
        })
    }

    pub(crate) fn health_json(&self, now: Now) -> Bytes {
        let (status, detail) = match &self.storage_error {
            Some(e) => ("degraded", Some(format!("storage: {e}"))),
            None => ("ok", None),
        };
        json(&HealthReply {
            status: status.into(),
            uptime_ms: now.mono.duration_since(self.started).as_millis() as u64,
            connections: self.conns.len() as u64,
            detail,
        })
    }

    pub(crate) fn stats_json(&self, now: Now) -> Bytes {
        json(&self.stats(now))
    }

    /// The STATS document.
    pub fn stats(&self, now: Now) -> StatsReply {
        let topics = self
            .topics
            .values()
            .map(|t| TopicStats {
                name: t.name.clone(),
                records_in: t.counters.records_in,
                bytes_in: t.counters.bytes_in,
                records_out: t.counters.records_out,
                bytes_out: t.counters.bytes_out,
                partitions: t
                    .logs
                    .iter()
                    .enumerate()
                    .map(|(p, log)| PartitionStats {
                        partition: p as u32,
                        next_offset: log.next_offset(),
                        oldest_offset: log.oldest_offset(),
                        bytes_stored: log.bytes_stored(),
                        segments: log.segments(),
                    })
                    .collect(),
            })
            .collect();
        let groups = self.groups.values().map(|g| self.group_stats(g, now)).collect();
        StatsReply {
            uptime_ms: now.mono.duration_since(self.started).as_millis() as u64,
            connections: self.conns.len() as u64,
            connections_total: self.counters.connections_total,
            connections_rejected: self.counters.connections_rejected,
            bytes_in: self.counters.bytes_in,
            bytes_out: self.counters.bytes_out,
            topics,
            groups,
        }
    }

    fn group_stats(&self, g: &super::Group, now: Now) -> GroupStats {
        let topic = self.topics.get(&g.topic);
        let partitions: Vec<GroupPartitionStats> = (0..g.partition_count())
            .map(|p| {
                let next_offset = topic.map_or(0, |t| t.logs[p as usize].next_offset());
                let committed = g.committed(p);
                GroupPartitionStats {
                    partition: p,
                    committed,
                    next_delivery: g.next_delivery(p),
                    lag: next_offset.saturating_sub(committed),
                    in_flight: g.in_flight(p),
                    owner: g.owner(p),
                }
            })
            .collect();
        let members = g
            .members
            .iter()
            .map(|m| {
                let state = self.conns.get(&m.conn);
                let paused = match state {
                    Some(s) if s.paused => Some("slow_consumer".to_string()),
                    _ if m.in_flight >= m.credit => Some("credit".to_string()),
                    _ => None,
                };
                MemberStats {
                    id: m.conn,
                    peer: state.map(|s| s.peer.clone()).unwrap_or_default(),
                    partitions: g.partitions_of(m.conn),
                    credit: m.credit,
                    in_flight: u64::from(m.in_flight),
                    paused,
                }
            })
            .collect();
        GroupStats {
            group: g.name.clone(),
            topic: g.topic.clone(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            in_flight: g.in_flight_total(),
            acked: g.counters.acked,
            redelivered: g.counters.redelivered,
            dead_lettered: g.counters.dead_lettered,
            members,
            partitions,
            kind: g.kind.word().into(),
            empty_since_ms: g.empty.map(|e| e.wall_ms),
            expires_in_ms: self.expires_in(g, now).map(|d| d.as_millis() as u64),
        }
    }

    /// Time until the group expiry deletes `g`, if it is counting.
    fn expires_in(&self, g: &super::Group, now: Now) -> Option<std::time::Duration> {
        let expiry = self.config.group_expiry;
        let empty = g.empty.filter(|_| !expiry.is_zero())?;
        Some(expiry.saturating_sub(empty.elapsed(now.mono)))
    }

    pub(crate) fn topics_json(&self) -> Bytes {
        json(&TopicsReply {
            topics: self
                .topics
                .values()
                .map(|t| TopicInfo {
                    name: t.name.clone(),
                    partitions: t.partitions(),
                    retention_bytes: t.retention.bytes,
                    retention_ms: t.retention.ms,
                    records: t.records_held(),
                })
                .collect(),
        })
    }

    pub(crate) fn groups_json(&self, now: Now) -> Bytes {
        json(&GroupsReply {
            groups: self
                .groups
                .values()
                .map(|g| {
                    let s = self.group_stats(g, now);
                    GroupInfo {
                        group: s.group,
                        topic: s.topic,
                        members: s.members.len() as u32,
                        lag: s.lag,
                        in_flight: s.in_flight,
                        kind: s.kind,
                        empty_since_ms: s.empty_since_ms,
                        expires_in_ms: s.expires_in_ms,
                    }
                })
                .collect(),
        })
    }
}
