//! How groups end, with fake time: ephemeral groups with their last member, durable groups
//! after the group expiry (also across a restart from the checkpoint), and `DELETE_GROUP`.

use mq_protocol::admin::{GroupInfo, GroupsReply};

use super::*;

fn subscribe_kind(h: &mut Harness, conn: ConnId, group: &str, kind: GroupKind) -> Response {
    let request = Request::Subscribe {
        topic: "t".into(),
        group: group.into(),
        start: StartPosition::Earliest,
        credit: 100,
        kind,
    };
    h.request(conn, request)
}

fn ephemeral(h: &mut Harness, conn: ConnId, group: &str) {
    let reply = subscribe_kind(h, conn, group, GroupKind::Ephemeral);
    assert!(matches!(reply, Response::Subscribed { .. }), "{reply:?}");
}

fn groups(h: &mut Harness, conn: ConnId) -> Vec<GroupInfo> {
    let Response::Groups(json) = h.request(conn, Request::Groups) else { panic!("no GROUPS") };
    serde_json::from_slice::<GroupsReply>(&json).unwrap().groups
}

fn delete(h: &mut Harness, conn: ConnId, group: &str) -> Response {
    h.request(conn, Request::DeleteGroup { topic: "t".into(), group: group.into() })
}

fn unsubscribe(h: &mut Harness, conn: ConnId, group: &str) {
    let reply = h.request(conn, Request::Unsubscribe { topic: "t".into(), group: group.into() });
    assert_eq!(reply, Response::Ok);
}

/// The checkpoint the core would write now, as text.
fn checkpoint(h: &mut Harness) -> String {
    h.core.forget_checkpoint();
    String::from_utf8(h.core.checkpoint_changed().expect("a checkpoint")).unwrap()
}

fn with_expiry(ms: u64) -> Harness {
    Harness::new(CoreConfig {
        partitions_default: 1,
        group_expiry: Duration::from_millis(ms),
        ..CoreConfig::default()
    })
}

#[test]
fn an_ephemeral_group_is_deleted_with_its_records_in_flight_when_its_last_member_leaves() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.connect(2);
    h.publish(1, "t", 3);
    ephemeral(&mut h, 1, "look");
    assert_eq!(h.pump().len(), 3, "in flight to member 1");
    ephemeral(&mut h, 2, "look");
    unsubscribe(&mut h, 1, "look");
    // Not the last member: its records go to the one left, as in any group.
    let again: Vec<(ConnId, u32)> = h.pump().iter().map(|(c, d)| (*c, d.attempt)).collect();
    assert_eq!(again, vec![(2, 2), (2, 2), (2, 2)]);
    let listed = groups(&mut h, 1);
    assert_eq!((listed[0].kind.as_str(), listed[0].in_flight), ("ephemeral", 3));

    unsubscribe(&mut h, 2, "look");
    assert_eq!(h.core.committed("t", "look", 0), None, "offsets deleted");
    assert!(groups(&mut h, 1).is_empty(), "GROUPS lists it no more");
    let topics = h.request(1, Request::Topics);
    assert!(!format!("{topics:?}").contains("t.dlq"), "nothing dead-lettered: {topics:?}");
    // The name is free again: a new group, with fresh delivery counts.
    ephemeral(&mut h, 1, "look");
    let fresh: Vec<u32> = h.pump().iter().map(|(_, d)| d.attempt).collect();
    assert_eq!(fresh, vec![1, 1, 1]);
}

#[test]
fn an_ephemeral_group_is_deleted_when_its_connection_goes_away() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.publish(1, "t", 2);
    ephemeral(&mut h, 1, "look");
    assert_eq!(h.pump().len(), 2);
    let now = h.now();
    h.core.disconnect(1, now);
    assert_eq!(h.core.committed("t", "look", 0), None);
    h.connect(2);
    assert!(groups(&mut h, 2).is_empty());
}

#[test]
fn an_ephemeral_group_is_deleted_when_its_silent_member_is_closed() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.publish(1, "t", 1);
    ephemeral(&mut h, 1, "look");
    assert_eq!(h.pump().len(), 1);
    h.advance(5_000); // the ack timeout passes and the member sent nothing since
    let closed = h.core.take_outputs();
    assert!(
        closed.iter().any(|o| matches!(o, Output::Close { code: ErrorCode::IDLE_TIMEOUT, .. })),
        "{closed:?}"
    );
    assert_eq!(h.core.committed("t", "look", 0), None);
}

#[test]
fn ephemeral_groups_are_not_checkpointed() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.connect(2);
    ephemeral(&mut h, 1, "look");
    h.subscribe(2, "t", "keep", 10);
    let saved = checkpoint(&mut h);
    assert!(saved.contains(r#""group":"keep""#) && !saved.contains("look"), "{saved}");
}

#[test]
fn a_subscription_of_the_other_kind_is_refused_with_group_kind_mismatch() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.connect(2);
    h.connect(3);
    h.connect(4);
    ephemeral(&mut h, 1, "look");
    assert_error(
        subscribe_kind(&mut h, 2, "look", GroupKind::Durable),
        ErrorCode::GROUP_KIND_MISMATCH,
    );
    h.subscribe(3, "t", "keep", 10);
    unsubscribe(&mut h, 3, "keep");
    // Also an empty durable group keeps its kind: its offsets are not an ephemeral's to drop.
    assert_error(
        subscribe_kind(&mut h, 4, "keep", GroupKind::Ephemeral),
        ErrorCode::GROUP_KIND_MISMATCH,
    );
    // The refused connections may subscribe elsewhere.
    ephemeral(&mut h, 2, "other");
    assert_eq!(groups(&mut h, 1).len(), 3);
}

#[test]
fn an_empty_durable_group_expires_after_the_group_expiry_and_a_member_resets_the_clock() {
    let mut h = with_expiry(10_000);
    h.connect(1);
    h.connect(2);
    h.publish(1, "t", 3);
    h.subscribe(1, "t", "g", 10);
    let got = h.pump();
    h.ack(1, "t", "g", &got[0].1);
    unsubscribe(&mut h, 1, "g");
    let empty_at = h.now().wall_ms;
    h.advance(9_000);
    let listed = groups(&mut h, 2);
    assert_eq!(listed[0].empty_since_ms, Some(empty_at));
    assert_eq!(listed[0].expires_in_ms, Some(1_000));
    assert_eq!(h.core.committed("t", "g", 0), Some(1), "kept until the expiry");

    h.subscribe(2, "t", "g", 10);
    assert_eq!(groups(&mut h, 2)[0].expires_in_ms, None, "a member stops the clock");
    h.advance(20_000);
    unsubscribe(&mut h, 2, "g");
    h.advance(9_999);
    assert_eq!(h.core.committed("t", "g", 0), Some(1), "counted from the last leave");
    h.advance(1);
    assert_eq!(h.core.committed("t", "g", 0), None, "expired with its offsets");
    assert!(groups(&mut h, 2).is_empty());
    assert!(!checkpoint(&mut h).contains(r#""group":"g""#));
}

#[test]
fn with_group_expiry_zero_an_empty_group_stays() {
    let mut h = with_expiry(0);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    unsubscribe(&mut h, 1, "g");
    h.advance(365 * 24 * 3600 * 1000);
    let listed = groups(&mut h, 1);
    assert_eq!((listed.len(), listed[0].expires_in_ms), (1, None));
    assert!(listed[0].empty_since_ms.is_some());
}

#[test]
fn a_wall_clock_jump_expires_no_group() {
    let mut h = with_expiry(10_000);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    unsubscribe(&mut h, 1, "g");
    let mut now = h.now();
    now.wall_ms += 30 * 24 * 3600 * 1000;
    h.core.tick(now);
    assert_eq!(h.core.committed("t", "g", 0), Some(0), "timed on the monotonic clock");
}

/// Storage of a restarted broker: topic `t` (one partition, three records) and the
/// checkpoint that the previous run wrote.
#[derive(Debug)]
struct Reloaded(Vec<u8>);

impl Storage for Reloaded {
    fn load(
        &mut self,
    ) -> Result<(Vec<crate::storage::LoadedTopic>, Option<Vec<u8>>), StorageError> {
        let (topics, _) = Restarted { checkpoint: "" }.load()?;
        Ok((topics, Some(self.0.clone())))
    }

    fn create_topic(
        &mut self,
        topic: &str,
        meta: TopicMeta,
    ) -> Result<Vec<Box<dyn PartitionLog>>, StorageError> {
        Mem.create_topic(topic, meta)
    }

    fn save_checkpoint(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }

    fn mark_clean(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A core restarted `later_ms` of wall time after `saved` was written, with a monotonic
/// clock that starts afresh (as after a reboot).
fn restart(saved: &str, expiry_ms: u64, wall_ms: u64) -> Harness {
    let config =
        CoreConfig { group_expiry: Duration::from_millis(expiry_ms), ..CoreConfig::default() };
    let base = Instant::now();
    let now = Now { mono: base, wall_ms };
    let core = Core::new(config, Box::new(Reloaded(saved.as_bytes().to_vec())), now).unwrap();
    Harness { core, base, now_ms: 0, wall_base_ms: wall_ms }
}

#[test]
fn the_group_expiry_goes_on_counting_across_a_restart() {
    let mut h = with_expiry(10_000);
    h.connect(1);
    h.publish(1, "t", 3);
    h.subscribe(1, "t", "g", 10);
    let got = h.pump();
    h.ack(1, "t", "g", &got[0].1);
    unsubscribe(&mut h, 1, "g");
    let empty_at = h.now().wall_ms;
    let saved = checkpoint(&mut h);
    assert!(saved.contains(&format!(r#""empty_since_ms":{empty_at}"#)), "{saved}");

    // Down for 6 s: 4 s are left.
    let mut h = restart(&saved, 10_000, empty_at + 6_000);
    assert_eq!(h.core.committed("t", "g", 0), Some(1), "restored");
    h.connect(1);
    assert_eq!(groups(&mut h, 1)[0].expires_in_ms, Some(4_000));
    assert!(h.core.checkpoint_changed().is_none(), "the restored stamp is kept as it was");
    h.advance(3_999);
    assert_eq!(h.core.committed("t", "g", 0), Some(1));
    h.advance(1);
    assert_eq!(h.core.committed("t", "g", 0), None, "expired 10 s after its last member left");

    // Down for longer than the expiry: gone at the first tick.
    let mut h = restart(&saved, 10_000, empty_at + 60_000);
    h.advance(0);
    assert_eq!(h.core.committed("t", "g", 0), None);
}

#[test]
fn a_restored_group_without_a_stamp_counts_from_the_start() {
    // Written with members, or by a broker without group expiry: no `empty_since_ms`.
    let saved = r#"{"version":1,"groups":[{"topic":"t","group":"g","partitions":[{"committed":1,"attempts":[]}]}]}"#;
    let mut h = restart(saved, 10_000, 5_000_000);
    h.connect(1);
    let listed = groups(&mut h, 1);
    assert_eq!(
        (listed[0].empty_since_ms, listed[0].expires_in_ms),
        (Some(5_000_000), Some(10_000))
    );
    assert!(checkpoint(&mut h).contains(r#""empty_since_ms":5000000"#), "stamped from now on");
    h.advance(10_000);
    assert_eq!(h.core.committed("t", "g", 0), None);
}

#[test]
fn delete_group_deletes_an_empty_group_and_refuses_one_with_members() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.connect(2);
    h.publish(1, "t", 3);
    assert_error(delete(&mut h, 2, "g"), ErrorCode::NO_SUCH_GROUP);
    h.subscribe(1, "t", "g", 10);
    let got = h.pump();
    for (_, d) in &got[..2] {
        h.ack(1, "t", "g", d);
    }
    match delete(&mut h, 2, "g") {
        Response::Error { code: ErrorCode::GROUP_ACTIVE, message } => {
            assert_eq!(message, "group g on t has 1 members")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.core.committed("t", "g", 0), Some(2), "a refused delete changes nothing");

    unsubscribe(&mut h, 1, "g");
    assert_eq!(delete(&mut h, 2, "g"), Response::Ok);
    assert_eq!(h.core.committed("t", "g", 0), None);
    assert!(!checkpoint(&mut h).contains(r#""group":"g""#));
    assert_error(delete(&mut h, 2, "g"), ErrorCode::NO_SUCH_GROUP);
    // Subscribing again makes a new group at its start position, with fresh counts.
    h.subscribe(1, "t", "g", 10);
    let again: Vec<(u64, u32)> = h.pump().iter().map(|(_, d)| (d.offset, d.attempt)).collect();
    assert_eq!(again, vec![(0, 1), (1, 1), (2, 1)]);
}

#[test]
fn delete_group_needs_auth_like_any_request() {
    let mut h =
        Harness::new(CoreConfig { auth_token: Some("s3cret".into()), ..CoreConfig::default() });
    h.connect(1);
    assert_error(delete(&mut h, 1, "g"), ErrorCode::AUTH_REQUIRED);
}
