//! How `mqctl` prints admin documents as tables for people.

use std::collections::HashMap;

use mq_client::protocol::admin::{
    GroupsReply, HealthReply, InfoReply, StatsReply, TopicStats, TopicsReply,
};
use mq_tools::table::Table;
use mq_tools::{human_bytes, human_count, human_rate};

/// Counters of the earlier of two `STATS` samples, for rates.
#[derive(Debug, Default)]
pub struct Earlier {
    seconds: f64,
    topics: HashMap<String, TopicStats>,
    acked: HashMap<(String, String), u64>,
}

impl Earlier {
    /// Remembers `stats`, taken `seconds` before the sample the rates are computed for.
    pub fn new(stats: &StatsReply, seconds: f64) -> Earlier {
        Earlier {
            seconds,
            topics: stats.topics.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            acked: stats
                .groups
                .iter()
                .map(|g| ((g.group.clone(), g.topic.clone()), g.acked))
                .collect(),
        }
    }

    fn rate(&self, now: u64, then: Option<u64>) -> Option<f64> {
        let then = then?;
        (self.seconds > 0.0).then(|| now.saturating_sub(then) as f64 / self.seconds)
    }
}

/// The `STATS` document as three tables: broker, topics and partitions, groups and members.
pub fn stats(s: &StatsReply, earlier: Option<&Earlier>) -> String {
    let mut out = format!(
        "broker: up {:.1} s, {} connections ({} accepted, {} rejected), {} in, {} out\n\n",
        s.uptime_ms as f64 / 1000.0,
        s.connections,
        human_count(s.connections_total),
        human_count(s.connections_rejected),
        human_bytes(s.bytes_in as f64),
        human_bytes(s.bytes_out as f64),
    );
    out += &topic_table(s, earlier).to_string();
    out.push('\n');
    out += &group_table(s, earlier).to_string();
    out
}

fn topic_table(s: &StatsReply, earlier: Option<&Earlier>) -> Table {
    let mut t = Table::new(
        &["TOPIC", "PARTITION", "RECORDS", "NEXT_OFFSET", "BYTES", "IN", "OUT", "IN_BYTES"],
        2,
    );
    for topic in &s.topics {
        let then = earlier.and_then(|e| e.topics.get(&topic.name));
        let rate = |now: u64, pick: fn(&TopicStats) -> u64| {
            earlier.and_then(|e| e.rate(now, then.map(pick)))
        };
        let held: u64 = topic.partitions.iter().map(|p| p.next_offset - p.oldest_offset).sum();
        let stored: u64 = topic.partitions.iter().map(|p| p.bytes_stored).sum();
        t.row(vec![
            topic.name.clone(),
            "all".into(),
            human_count(held),
            human_count(topic.records_in),
            human_bytes(stored as f64),
            human_rate(rate(topic.records_in, |t| t.records_in)),
            human_rate(rate(topic.records_out, |t| t.records_out)),
            rate(topic.bytes_in, |t| t.bytes_in).map_or("-".into(), |r| human_bytes(r) + "/s"),
        ]);
        for p in &topic.partitions {
            let then_next = then
                .and_then(|t| t.partitions.iter().find(|q| q.partition == p.partition))
                .map(|q| q.next_offset);
            t.row(vec![
                String::new(),
                p.partition.to_string(),
                human_count(p.next_offset - p.oldest_offset),
                human_count(p.next_offset),
                human_bytes(p.bytes_stored as f64),
                human_rate(earlier.and_then(|e| e.rate(p.next_offset, then_next))),
            ]);
        }
    }
    t
}

fn group_table(s: &StatsReply, earlier: Option<&Earlier>) -> Table {
    let mut t = Table::new(
        &[
            "GROUP",
            "TOPIC",
            "KIND",
            "MEMBERS",
            "LAG",
            "IN_FLIGHT",
            "ACKED",
            "ACK_RATE",
            "REDELIVERED",
            "DEAD_LETTERED",
        ],
        3,
    );
    for g in &s.groups {
        let then = earlier.and_then(|e| e.acked.get(&(g.group.clone(), g.topic.clone())).copied());
        t.row(vec![
            g.group.clone(),
            g.topic.clone(),
            g.kind.clone(),
            g.members.len().to_string(),
            human_count(g.lag),
            human_count(g.in_flight),
            human_count(g.acked),
            human_rate(earlier.and_then(|e| e.rate(g.acked, then))),
            human_count(g.redelivered),
            human_count(g.dead_lettered),
        ]);
        for m in &g.members {
            let paused = m.paused.as_deref().map(|p| format!(" paused:{p}")).unwrap_or_default();
            t.row(vec![
                format!("  member {} {}{paused}", m.id, m.peer),
                format!("partitions {}", compact(&m.partitions)),
                String::new(),
                String::new(),
                String::new(),
                human_count(m.in_flight),
                format!("credit {}", m.credit),
            ]);
        }
    }
    t
}

/// Partition numbers with runs shortened: `0-3,8,10-11`.
pub fn compact(partitions: &[u32]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// `TOPICS` as a table.
pub fn topics(r: &TopicsReply) -> String {
    let mut t =
        Table::new(&["TOPIC", "PARTITIONS", "RECORDS", "RETENTION_BYTES", "RETENTION_MS"], 1);
    for topic in &r.topics {
        t.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            human_count(topic.records),
            unlimited(topic.retention_bytes),
            unlimited(topic.retention_ms),
        ]);
    }
    t.to_string()
}

fn unlimited(n: u64) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        human_count(n)
    }
}

/// `GROUPS` as a table.
pub fn groups(r: &GroupsReply) -> String {
    let mut t =
        Table::new(&["GROUP", "TOPIC", "KIND", "MEMBERS", "LAG", "IN_FLIGHT", "EXPIRES_IN"], 3);
    for g in &r.groups {
        t.row(vec![
            g.group.clone(),
            g.topic.clone(),
            g.kind.clone(),
            g.members.to_string(),
            human_count(g.lag),
            human_count(g.in_flight),
            expires_in(g.expires_in_ms),
        ]);
    }
    t.to_string()
}

/// Time until an empty group expires, in the largest unit that fits; `-` if it does not.
pub fn expires_in(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `HEALTH` as one line.
pub fn health(h: &HealthReply) -> String {
    let detail = h.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
    format!(
        "{}{detail} (up {:.1} s, {} connections)\n",
        h.status,
        h.uptime_ms as f64 / 1000.0,
        h.connections
    )
}

/// `INFO` as `name: value` lines.
pub fn info(i: &InfoReply) -> String {
    let rows = [
        ("server", format!("{} {}", i.server, i.version)),
        ("protocol", i.protocol.to_string()),
        ("storage", i.storage.clone()),
        ("fsync", i.fsync.clone()),
        ("frame_body_bytes_max", human_count(u64::from(i.frame_body_bytes_max))),
        ("line_bytes_max", human_count(i.line_bytes_max as u64)),
        ("partitions_default", i.partitions_default.to_string()),
        ("ack_timeout_ms", human_count(i.ack_timeout_ms)),
        ("max_deliveries", i.max_deliveries.to_string()),
        ("auth_required", i.auth_required.to_string()),
    ];
    rows.iter().map(|(k, v)| format!("{k:<21} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_shown_in_the_largest_unit() {
        assert_eq!(expires_in(None), "-");
        assert_eq!(expires_in(Some(59_999)), "59s");
        assert_eq!(expires_in(Some(90_000)), "1m");
        assert_eq!(expires_in(Some(3_660_000)), "1h1m");
        assert_eq!(expires_in(Some(604_800_000)), "7d0h");
    }

    #[test]
    fn partition_runs_are_shortened() {
        assert_eq!(compact(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(compact(&[]), "-");
    }
}
