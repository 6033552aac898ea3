//! How consumer groups end: an ephemeral group when its last member leaves, an empty durable
//! group after the group expiry, any empty group on `DELETE_GROUP`.
//!
//! Groups made for one look (`mqctl tail`, `mq-bench`) would otherwise stay for ever, their
//! lag growing with every record published. Deleting a group drops its committed offsets,
//! its records in flight or waiting for redelivery, and their delivery counts; nothing is
//! dead-lettered, since no consumer is left to have failed on them. The next checkpoint no
//! longer lists the group, so a restart does not bring it back.

use log::info;
use mq_protocol::{ErrorCode, GroupKind, Response};

use super::group::{EmptySince, Group};
use super::{ConnId, Core, Now, Reply};

/// Why a group was deleted, for the log line.
#[derive(Debug, Clone, Copy)]
enum Deleted<'a> {
    LastMemberLeft,
    Expired,
    Requested { peer: &'a str },
}

impl Core {
    /// Takes `conn` out of its group; an ephemeral group it was the last member of is
    /// deleted, anything else hands its records in flight to the other members.
    pub(super) fn leave(&mut self, conn: ConnId, topic: &str, group: &str, now: Now) {
        let key = (topic.to_string(), group.to_string());
        let Some(g) = self.groups.get_mut(&key) else { return };
        let last = g.members.len() == 1 && g.is_member(conn);
        if last && g.kind == GroupKind::Ephemeral {
            self.remove_group(&key, Deleted::LastMemberLeft);
            return;
        }
        let mut dead = Vec::new();
        g.leave(conn, self.config.max_deliveries, &mut dead);
        if g.members.is_empty() {
            g.empty =
                Some(EmptySince { at: now.mono, before: Default::default(), wall_ms: now.wall_ms });
        }
        self.dead_letter(topic, &dead, now);
    }

    /// Refuses a subscription whose kind differs from the existing group's: an ephemeral
    /// subscriber would otherwise delete a durable group's offsets on leaving, and a durable
    /// one would keep an ephemeral group alive for ever.
    pub(super) fn check_kind(&self, topic: &str, group: &str, kind: GroupKind) -> Reply {
        match self.groups.get(&(topic.to_string(), group.to_string())) {
            Some(g) if g.kind != kind => Err((
                ErrorCode::GROUP_KIND_MISMATCH,
                format!("group {group} on {topic} is {}", g.kind.word()),
            )),
            _ => Ok(Response::Ok),
        }
    }

    /// `DELETE_GROUP`: deletes a group without members. A group with members is refused
    /// rather than forced: its consumers would create it again on their next reconnect.
    pub(super) fn delete_group(&mut self, conn: ConnId, topic: &str, group: &str) -> Reply {
        let key = (topic.to_string(), group.to_string());
        let members = match self.groups.get(&key) {
            None => return Err((ErrorCode::NO_SUCH_GROUP, format!("no group {group} on {topic}"))),
            Some(g) => g.members.len(),
        };
        if members > 0 {
            return Err((
                ErrorCode::GROUP_ACTIVE,
                format!("group {group} on {topic} has {members} members"),
            ));
        }
        let peer = self.conns.get(&conn).map(|s| s.peer.clone()).unwrap_or_default();
        self.remove_group(&key, Deleted::Requested { peer: &peer });
        Ok(Response::Ok)
    }

    /// Deletes every durable group that has had no member for the group expiry (none if the
    /// expiry is zero). Timed on `now.mono`, as the event loop passes it in.
    pub(super) fn expire_groups(&mut self, now: Now) {
        let expiry = self.config.group_expiry;
        if expiry.is_zero() {
            return;
        }
        let expired: Vec<(String, String)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.empty.is_some_and(|e| e.elapsed(now.mono) >= expiry))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove_group(&key, Deleted::Expired);
        }
    }

    /// Forgets a group and everything it held, and logs why.
    fn remove_group(&mut self, key: &(String, String), why: Deleted<'_>) {
        let Some(g) = self.groups.remove(key) else { return };
        if let Some(t) = self.topics.get_mut(&g.topic) {
            t.groups.retain(|name| *name != g.name);
        }
        let (name, topic, in_flight) = (&g.name, &g.topic, g.in_flight_total());
        let lag = self.group_lag(&g);
        match why {
            Deleted::LastMemberLeft => info!(
                "deleted ephemeral group {name} on {topic}: its last member left ({in_flight} records in flight dropped)"
            ),
            Deleted::Expired => info!(
                "deleted group {name} on {topic}: no member for {} ms (--group-expiry-ms); its committed offsets are gone ({lag} records were unacknowledged)",
                self.config.group_expiry.as_millis()
            ),
            Deleted::Requested { peer } => info!(
                "deleted group {name} on {topic} by DELETE_GROUP from {peer} ({lag} records were unacknowledged)"
            ),
        }
    }

    /// Records published but not acknowledged by `g`, over all partitions.
    pub(super) fn group_lag(&self, g: &Group) -> u64 {
        let Some(t) = self.topics.get(&g.topic) else { return 0 };
        (0..g.partition_count())
            .map(|p| t.logs[p as usize].next_offset().saturating_sub(g.committed(p)))
            .sum()
    }
}
