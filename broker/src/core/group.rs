//! A consumer group on one topic: members, partition ownership, and the at-least-once state
//! of every partition (what is in flight, what waits for redelivery, where new records start).
//!
//! Invariant per partition: every offset below `next` that is at or above the oldest offset
//! held is either acknowledged, in `inflight`, or in `redeliver`. So the committed offset
//! (lowest unacknowledged) is the least of `next`, the first in-flight offset and the first
//! offset waiting for redelivery: it needs no separate bookkeeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mq_protocol::{Delivery, GroupKind, OffsetRange, StartPosition};

use super::ConnId;
use crate::storage::{PartitionLog, StoredRecord};

/// One delivery that has not been acknowledged.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// Deliveries so far, this one included.
    attempt: u32,
    /// When it times out (delivered) or becomes due again (delayed by NACK).
    deadline: Instant,
    /// The member it was delivered to; `None` while a NACK delay runs.
    member: Option<ConnId>,
}

#[derive(Debug, Default)]
struct GroupPartition {
    owner: Option<ConnId>,
    /// Next offset never yet delivered to this group.
    next: u64,
    inflight: BTreeMap<u64, Flight>,
    /// Offsets to deliver again, with the deliveries they already had.
    redeliver: BTreeMap<u64, u32>,
    /// Deliveries that offsets at or above `next` had before a restart (from the checkpoint).
    prior: BTreeMap<u64, u32>,
}

impl GroupPartition {
    fn committed(&self) -> u64 {
        let mut c = self.next;
        if let Some((&o, _)) = self.inflight.first_key_value() {
            c = c.min(o);
        }
        if let Some((&o, _)) = self.redeliver.first_key_value() {
            c = c.min(o);
        }
        c
    }

    fn has_work(&self, log: &dyn PartitionLog) -> bool {
        !self.redeliver.is_empty() || self.next < log.next_offset()
    }
}

/// A member: one subscribed connection.
#[derive(Debug)]
pub(crate) struct Member {
    pub conn: ConnId,
    pub credit: u32,
    pub in_flight: u32,
    /// Partition to start from next pump, so partitions share a small credit fairly.
    cursor: usize,
}

/// A record that used up its deliveries, or was rejected, bound for the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub partition: u32,
    pub offset: u64,
    pub attempts: u32,
    pub reason: &'static str,
}

/// Counters of one group, since start.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GroupCounters {
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Records that retention removed before the group acknowledged them.
    pub lost_to_retention: u64,
}

/// Limits of one pump.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PumpLimits {
    /// Most records in one DELIVER.
    pub records_max: usize,
    /// Most payload bytes in one DELIVER.
    pub bytes_max: usize,
}

/// Since when a group has had no member, for the group expiry.
///
/// Timed on the monotonic clock, so a wall-clock jump expires nothing; `before` carries the
/// time the group had already been empty before the broker started (from the checkpoint's
/// wall-clock stamp), because monotonic instants do not survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EmptySince {
    /// When this broker saw it become empty (or started, for a restored group).
    pub at: Instant,
    /// Time it had been empty before `at`.
    pub before: Duration,
    /// When it became empty, in wall-clock milliseconds since the Unix epoch: saved in the
    /// checkpoint and shown in `GROUPS`.
    pub wall_ms: u64,
}

impl EmptySince {
    /// How long the group has been empty at `now`.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at) + self.before
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub name: String,
    pub topic: String,
    pub kind: GroupKind,
    pub ack_timeout: Duration,
    pub members: Vec<Member>,
    /// `Some` while the group has no member.
    pub empty: Option<EmptySince>,
    parts: Vec<GroupPartition>,
    pub counters: GroupCounters,
}

/// Outcome of an ACK, NACK or REJECT: how many offsets it touched.
pub(crate) type Touched = u64;

impl Group {
    /// A group without members; the caller joins the first one or marks it empty.
    pub fn new(
        name: String,
        topic: String,
        kind: GroupKind,
        logs: &[Box<dyn PartitionLog>],
        start: StartPosition,
        ack_timeout: Duration,
    ) -> Group {
        let parts = logs
            .iter()
            .map(|log| GroupPartition {
                next: match start {
                    StartPosition::Latest => log.next_offset(),
                    StartPosition::Earliest | StartPosition::Committed => log.oldest_offset(),
                },
                ..GroupPartition::default()
            })
            .collect();
        Group {
            name,
            topic,
            kind,
            ack_timeout,
            members: Vec::new(),
            empty: None,
            parts,
            counters: GroupCounters::default(),
        }
    }

    /// Restores a partition from the checkpoint: resume at `committed`, remembering how many
    /// deliveries the unacknowledged records above it already had.
    pub fn restore(&mut self, partition: u32, committed: u64, attempts: &[(u64, u32)]) {
        let part = &mut self.parts[partition as usize];
        part.next = committed.max(part.next);
        part.prior = attempts.iter().copied().filter(|&(o, _)| o >= part.next).collect();
    }

    /// (offset, deliveries so far) of every record of a partition not yet acknowledged.
    pub fn attempts(&self, partition: u32) -> Vec<(u64, u32)> {
        let part = &self.parts[partition as usize];
        let mut all: Vec<(u64, u32)> = part.inflight.iter().map(|(&o, f)| (o, f.attempt)).collect();
        all.extend(part.redeliver.iter().map(|(&o, &a)| (o, a)));
        all.extend(part.prior.iter().map(|(&o, &a)| (o, a)));
        all.sort_unstable();
        all
    }

    pub fn is_member(&self, conn: ConnId) -> bool {
        self.members.iter().any(|m| m.conn == conn)
    }

    pub fn member_mut(&mut self, conn: ConnId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.conn == conn)
    }

    pub fn join(&mut self, conn: ConnId, credit: u32) {
        assert!(!self.is_member(conn), "connection {conn} joined group {} twice", self.name);
        self.members.push(Member { conn, credit, in_flight: 0, cursor: 0 });
        self.empty = None;
        self.rebalance();
    }

    /// Removes a member; what it had in flight becomes due for redelivery now (or dead, if
    /// it used up its deliveries).
    pub fn leave(&mut self, conn: ConnId, max_deliveries: u32, dead: &mut Vec<DeadLetter>) {
        self.members.retain(|m| m.conn != conn);
        for (p, part) in self.parts.iter_mut().enumerate() {
            let gone: Vec<u64> = part
                .inflight
                .iter()
                .filter(|(_, f)| f.member == Some(conn))
                .map(|(&o, _)| o)
                .collect();
            for offset in gone {
                let flight = part.inflight.remove(&offset).expect("offset listed above");
                release(
                    part,
                    &mut self.counters,
                    p as u32,
                    offset,
                    flight.attempt,
                    max_deliveries,
                    "member_gone",
                    dead,
                );
            }
        }
        self.rebalance();
    }

    /// Spreads partitions over members in join order: partition `p` to member `p % n`.
    fn rebalance(&mut self) {
        let n = self.members.len();
        for (p, part) in self.parts.iter_mut().enumerate() {
            part.owner = (n > 0).then(|| self.members[p % n].conn);
        }
    }

    pub fn partitions_of(&self, conn: ConnId) -> Vec<u32> {
        (0..self.parts.len() as u32)
            .filter(|&p| self.parts[p as usize].owner == Some(conn))
            .collect()
    }

    fn check_ranges(&self, ranges: &[OffsetRange]) -> Result<(), String> {
        match ranges.iter().find(|r| r.partition as usize >= self.parts.len()) {
            Some(r) => Err(format!("partition {} >= {}", r.partition, self.parts.len())),
            None => Ok(()),
        }
    }

    /// Acknowledges every in-flight (or waiting) offset in `ranges`. Late acks of records
    /// that timed out are accepted; offsets never delivered are ignored.
    ///
    /// # Errors
    /// `Err(NoSuchPartition)` or `Err(NotInFlight)` if nothing in the ranges was in flight.
    pub fn ack(&mut self, ranges: &[OffsetRange]) -> Result<Touched, RangeError> {
        self.check_ranges(ranges).map_err(RangeError::NoSuchPartition)?;
        let mut acked = 0;
        for r in ranges {
            let part = &mut self.parts[r.partition as usize];
            let offsets: Vec<u64> =
                part.inflight.range(r.first..=r.last).map(|(&o, _)| o).collect();
            for offset in offsets {
                let flight = part.inflight.remove(&offset).expect("offset listed above");
                free_credit(&mut self.members, flight.member);
                acked += 1;
            }
            let waiting: Vec<u64> =
                part.redeliver.range(r.first..=r.last).map(|(&o, _)| o).collect();
            for offset in waiting {
                part.redeliver.remove(&offset);
                acked += 1;
            }
        }
        self.counters.acked += acked;
        if acked == 0 {
            return Err(RangeError::NotInFlight(describe(ranges)));
        }
        Ok(acked)
    }

    /// Gives in-flight offsets back: due again now (`delay` zero) or after `delay`. Records
    /// that used up their deliveries go to the dead-letter topic instead.
    pub fn nack(
        &mut self,
        ranges: &[OffsetRange],
        delay: Duration,
        now: Instant,
        max_deliveries: u32,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Touched, RangeError> {
        self.take_flights(ranges, |part, counters, p, offset, mut flight| {
            if delay.is_zero() || flight.attempt >= max_deliveries {
                release(part, counters, p, offset, flight.attempt, max_deliveries, "nack", dead);
            } else {
                flight.member = None;
                flight.deadline = now + delay;
                part.inflight.insert(offset, flight);
            }
        })
    }

    /// Sends in-flight offsets straight to the dead-letter topic.
    pub fn reject(
        &mut self,
        ranges: &[OffsetRange],
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Touched, RangeError> {
        self.take_flights(ranges, |_, counters, p, offset, flight| {
            counters.dead_lettered += 1;
            dead.push(DeadLetter {
                partition: p,
                offset,
                attempts: flight.attempt,
                reason: "rejected",
            });
        })
    }

    /// Removes the flights delivered to members in `ranges` (freeing their credit) and hands
    /// each to `f`.
    fn take_flights(
        &mut self,
        ranges: &[OffsetRange],
        mut f: impl FnMut(&mut GroupPartition, &mut GroupCounters, u32, u64, Flight),
    ) -> Result<Touched, RangeError> {
        self.check_ranges(ranges).map_err(RangeError::NoSuchPartition)?;
        let mut touched = 0;
        for r in ranges {
            let part = &mut self.parts[r.partition as usize];
            let offsets: Vec<u64> = part
                .inflight
                .range(r.first..=r.last)
                .filter(|(_, f)| f.member.is_some())
                .map(|(&o, _)| o)
                .collect();
            for offset in offsets {
                let flight = part.inflight.remove(&offset).expect("offset listed above");
                free_credit(&mut self.members, flight.member);
                f(part, &mut self.counters, r.partition, offset, flight);
                touched += 1;
            }
        }
        if touched == 0 {
            return Err(RangeError::NotInFlight(describe(ranges)));
        }
        Ok(touched)
    }

    /// Members holding a record whose ack timeout has passed and that sent no request since
    /// it was delivered (`last_request` of a connection): stopped or dead peers whose
    /// connection stays open. They would keep their partitions, and so their records, for
    /// ever (redelivered to them alone until dead-lettered).
    pub fn stalled(
        &self,
        now: Instant,
        last_request: impl Fn(ConnId) -> Option<Instant>,
    ) -> Vec<ConnId> {
        let mut stalled = Vec::new();
        for part in &self.parts {
            for flight in part.inflight.values().filter(|f| f.deadline <= now) {
                let Some(c) = flight.member else { continue };
                let delivered = flight.deadline.checked_sub(self.ack_timeout);
                let quiet = match (last_request(c), delivered) {
                    // A request of the delivering turn was handled before the delivery.
                    (Some(seen), Some(delivered)) => seen <= delivered,
                    _ => false,
                };
                if quiet && !stalled.contains(&c) {
                    stalled.push(c);
                }
            }
        }
        stalled
    }

    /// Moves flights whose deadline has passed to redelivery (or the dead-letter topic).
    pub fn expire(&mut self, now: Instant, max_deliveries: u32, dead: &mut Vec<DeadLetter>) {
        for (p, part) in self.parts.iter_mut().enumerate() {
            let due: Vec<u64> =
                part.inflight.iter().filter(|(_, f)| f.deadline <= now).map(|(&o, _)| o).collect();
            for offset in due {
                let flight = part.inflight.remove(&offset).expect("offset listed above");
                match flight.member {
                    Some(c) => {
                        free_credit(&mut self.members, Some(c));
                        release(
                            part,
                            &mut self.counters,
                            p as u32,
                            offset,
                            flight.attempt,
                            max_deliveries,
                            "ack_timeout",
                            dead,
                        );
                    }
                    None => {
                        part.redeliver.insert(offset, flight.attempt);
                    }
                }
            }
        }
    }

    /// Skips offsets that retention has removed.
    pub fn apply_retention(&mut self, logs: &[Box<dyn PartitionLog>]) {
        for (part, log) in self.parts.iter_mut().zip(logs) {
            let oldest = log.oldest_offset();
            if part.next < oldest {
                self.counters.lost_to_retention += oldest - part.next;
                part.next = oldest;
            }
            let before = part.redeliver.len();
            part.redeliver = part.redeliver.split_off(&oldest);
            self.counters.lost_to_retention += (before - part.redeliver.len()) as u64;
        }
    }

    /// Delivers what each member has credit for: redeliveries first, then new records.
    /// Returns one batch per member that got anything.
    pub fn pump(
        &mut self,
        logs: &[Box<dyn PartitionLog>],
        paused: impl Fn(ConnId) -> bool,
        now: Instant,
        limits: PumpLimits,
        out: &mut Vec<(ConnId, Vec<Delivery>)>,
    ) {
        let deadline = now + self.ack_timeout;
        let mut scratch = Vec::new();
        for mi in 0..self.members.len() {
            let conn = self.members[mi].conn;
            if paused(conn) || self.members[mi].in_flight >= self.members[mi].credit {
                continue;
            }
            let owned: Vec<usize> =
                (0..self.parts.len()).filter(|&p| self.parts[p].owner == Some(conn)).collect();
            if owned.is_empty() || !owned.iter().any(|&p| self.parts[p].has_work(logs[p].as_ref()))
            {
                continue;
            }
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let start = self.members[mi].cursor;
            for k in 0..owned.len() {
                let p = owned[(start + k) % owned.len()];
                let member = &mut self.members[mi];
                let room = (member.credit - member.in_flight) as usize;
                let room = room.min(limits.records_max - batch.len());
                if room == 0 || bytes >= limits.bytes_max {
                    break;
                }
                let part = &mut self.parts[p];
                let log = logs[p].as_ref();
                let sent = fill(
                    part,
                    p as u32,
                    log,
                    room,
                    limits.bytes_max - bytes,
                    conn,
                    deadline,
                    &mut scratch,
                    &mut batch,
                    &mut bytes,
                );
                member.in_flight += sent.first + sent.again;
                self.counters.delivered += u64::from(sent.first + sent.again);
                self.counters.redelivered += u64::from(sent.again);
                self.counters.lost_to_retention += u64::from(sent.lost);
            }
            self.members[mi].cursor = (start + 1) % owned.len();
            if !batch.is_empty() {
                out.push((conn, batch));
            }
        }
    }

    pub fn committed(&self, partition: u32) -> u64 {
        self.parts[partition as usize].committed()
    }

    pub fn partition_count(&self) -> u32 {
        self.parts.len() as u32
    }

    pub fn next_delivery(&self, partition: u32) -> u64 {
        self.parts[partition as usize].next
    }

    pub fn in_flight(&self, partition: u32) -> u64 {
        self.parts[partition as usize].inflight.len() as u64
    }

    pub fn owner(&self, partition: u32) -> Option<ConnId> {
        self.parts[partition as usize].owner
    }

    pub fn in_flight_total(&self) -> u64 {
        self.parts.iter().map(|p| p.inflight.len() as u64).sum()
    }
}

/// A flight delivered to `member` ended: the member may have one more record in flight.
fn free_credit(members: &mut [Member], member: Option<ConnId>) {
    if let Some(m) = member.and_then(|c| members.iter_mut().find(|m| m.conn == c)) {
        m.in_flight -= 1;
    }
}

/// Counts of one partition's part of a pump.
#[derive(Debug, Default)]
struct Sent {
    first: u32,
    again: u32,
    lost: u32,
}

/// Delivers up to `room` records of one partition into `batch`.
#[allow(clippy::too_many_arguments)]
fn fill(
    part: &mut GroupPartition,
    partition: u32,
    log: &dyn PartitionLog,
    room: usize,
    bytes_room: usize,
    conn: ConnId,
    deadline: Instant,
    scratch: &mut Vec<StoredRecord>,
    batch: &mut Vec<Delivery>,
    bytes: &mut usize,
) -> Sent {
    let mut sent = Sent::default();
    let budget = *bytes + bytes_room;
    while ((sent.first + sent.again) as usize) < room && *bytes < budget {
        let Some((&offset, &attempts)) = part.redeliver.first_key_value() else { break };
        part.redeliver.remove(&offset);
        scratch.clear();
        // A read error leaves the record waiting: it is tried again next pump.
        if log.read(offset, 1, usize::MAX, scratch).is_err() {
            part.redeliver.insert(offset, attempts);
            break;
        }
        match scratch.pop().filter(|r| r.offset == offset) {
            Some(record) => {
                *bytes += record.payload_bytes() as usize;
                part.inflight
                    .insert(offset, Flight { attempt: attempts + 1, deadline, member: Some(conn) });
                batch.push(delivery(partition, attempts + 1, record));
                sent.again += 1;
            }
            None => sent.lost += 1,
        }
    }
    let room_new = room - (sent.first + sent.again) as usize;
    if room_new == 0 || *bytes >= budget || part.next >= log.next_offset() {
        return sent;
    }
    scratch.clear();
    if log.read(part.next, room_new, budget - *bytes, scratch).is_err() {
        return sent;
    }
    for record in scratch.drain(..) {
        let offset = record.offset;
        *bytes += record.payload_bytes() as usize;
        let attempt =
            1 + if part.prior.is_empty() { 0 } else { part.prior.remove(&offset).unwrap_or(0) };
        part.inflight.insert(offset, Flight { attempt, deadline, member: Some(conn) });
        part.next = offset + 1;
        batch.push(delivery(partition, attempt, record));
        sent.first += 1;
    }
    if part.prior.first_key_value().is_some_and(|(&o, _)| o < part.next) {
        part.prior = part.prior.split_off(&part.next);
    }
    sent
}

fn delivery(partition: u32, attempt: u32, record: StoredRecord) -> Delivery {
    Delivery {
        partition,
        offset: record.offset,
        attempt,
        timestamp_ms: record.timestamp_ms,
        key: record.key,
        value: record.value,
    }
}

/// A flight that ended without an ack: due again, or dead if out of deliveries.
#[allow(clippy::too_many_arguments)]
fn release(
    part: &mut GroupPartition,
    counters: &mut GroupCounters,
    partition: u32,
    offset: u64,
    attempts: u32,
    max_deliveries: u32,
    reason: &'static str,
    dead: &mut Vec<DeadLetter>,
) {
    if attempts >= max_deliveries {
        counters.dead_lettered += 1;
        dead.push(DeadLetter { partition, offset, attempts, reason });
    } else {
        part.redeliver.insert(offset, attempts);
    }
}

fn describe(ranges: &[OffsetRange]) -> String {
    let r = ranges[0];
    let more = if ranges.len() > 1 {
        format!(" (and {} more ranges)", ranges.len() - 1)
    } else {
        String::new()
    };
    format!("partition {} offsets {}-{} not in flight{more}", r.partition, r.first, r.last)
}

/// Why an ACK, NACK or REJECT did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeError {
    NoSuchPartition(String),
    NotInFlight(String),
}
