//! How groups end, over real sockets: an ephemeral group goes with its connection, `DELGROUP`
//! and `DELETE_GROUP` delete empty groups, and a real `mqd` killed with SIGKILL comes back
//! with the expiry clock of its empty groups (and without its ephemeral ones).

mod common;

use std::time::{Duration, Instant};

use common::*;
use mq_protocol::admin::{GroupInfo, GroupsReply};
use mq_protocol::text::TextReply;
use mq_protocol::{ErrorCode, GroupKind, Request, Response, StartPosition};

fn groups(c: &mut Bin) -> Vec<GroupInfo> {
    match c.call(&Request::Groups) {
        Response::Groups(json) => serde_json::from_slice::<GroupsReply>(&json).unwrap().groups,
        other => panic!("{other:?}"),
    }
}

/// Waits (up to the reply timeout) until GROUPS satisfies `done`; returns the last listing.
fn groups_until(c: &mut Bin, done: impl Fn(&[GroupInfo]) -> bool) -> Vec<GroupInfo> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let listed = groups(c);
        if done(&listed) || Instant::now() >= deadline {
            return listed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn text_error(reply: TextReply, code: ErrorCode) {
    match reply {
        TextReply::Err { code: c, .. } => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[test]
fn an_ephemeral_group_goes_when_its_text_session_closes() {
    let broker = start_broker(|_| {});
    let mut look = Text::connect(broker.addr);
    look.send(b"PUB t 5\r\nhello\r\nSUB t look earliest ephemeral\r\n");
    assert!(matches!(look.reply(), TextReply::Ok(_)), "PUB");
    assert_eq!(look.reply(), TextReply::Ok("16".into()));
    assert!(matches!(look.reply(), TextReply::Msg { .. }), "the record, left unacknowledged");

    let mut admin = Bin::connect(broker.addr);
    let listed = groups(&mut admin);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].kind.as_str(), listed[0].in_flight), ("ephemeral", 1));
    // A durable subscription may not take over the ephemeral group's name.
    let mut durable = Text::connect(broker.addr);
    durable.send(b"SUB t look earliest\r\n");
    text_error(durable.reply(), ErrorCode::GROUP_KIND_MISMATCH);

    drop(look);
    let listed = groups_until(&mut admin, <[GroupInfo]>::is_empty);
    assert!(listed.is_empty(), "the ephemeral group outlived its connection: {listed:?}");
    // Its name is free now, for a durable group too.
    durable.send(b"SUB t look earliest\r\n");
    assert_eq!(durable.reply(), TextReply::Ok("16".into()));
}

#[test]
fn delgroup_deletes_an_empty_group_and_refuses_one_with_members() {
    let broker = start_broker(|_| {});
    let mut c = Text::connect(broker.addr);
    c.send(b"DELGROUP t keep\r\n");
    text_error(c.reply(), ErrorCode::NO_SUCH_GROUP);
    c.send(b"SUB t keep\r\nDELGROUP t keep\r\n");
    assert_eq!(c.reply(), TextReply::Ok("16".into()));
    text_error(c.reply(), ErrorCode::GROUP_ACTIVE);
    c.send(b"UNSUB t keep\r\ndelgroup t keep\r\n");
    assert_eq!(c.reply(), TextReply::Ok(String::new()));
    assert_eq!(c.reply(), TextReply::Ok(String::new()), "DELGROUP of an empty group");
    let mut admin = Bin::connect(broker.addr);
    assert!(groups(&mut admin).is_empty());
    // The binary request answers the same.
    let delete = Request::DeleteGroup { topic: "t".into(), group: "keep".into() };
    assert!(matches!(admin.call(&delete), Response::Error { code: ErrorCode::NO_SUCH_GROUP, .. }));
}

fn disk_args(data: &str, expiry_ms: &str) -> Vec<String> {
    ["--storage", "disk", "--data-dir", data, "--checkpoint-ms", "10", "--partitions", "2"]
        .into_iter()
        .map(String::from)
        .chain(["--group-expiry-ms".to_string(), expiry_ms.to_string()])
        .collect()
}

fn spawn(args: &[String]) -> Mqd {
    Mqd::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_killed_broker_restarts_with_the_expiry_clock_of_its_empty_groups() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let hour = "3600000";
    let mqd = spawn(&disk_args(data, hour));
    let mut c = Bin::connect(mqd.addr);
    assert!(matches!(c.call(&subscribe("t", "kept", 10)), Response::Subscribed { .. }));
    let unsub = Request::Unsubscribe { topic: "t".into(), group: "kept".into() };
    assert_eq!(c.call(&unsub), Response::Ok);
    let mut look = Bin::connect(mqd.addr);
    let ephemeral = Request::Subscribe {
        topic: "t".into(),
        group: "look".into(),
        start: StartPosition::Latest,
        credit: 10,
        kind: GroupKind::Ephemeral,
    };
    assert!(matches!(look.call(&ephemeral), Response::Subscribed { .. }));
    let before = groups(&mut c);
    let kept = before.iter().find(|g| g.group == "kept").expect("kept listed");
    let empty_since = kept.empty_since_ms.expect("an empty group is stamped");
    assert!(kept.expires_in_ms.is_some_and(|ms| ms <= 3_600_000), "{kept:?}");

    // The checkpoint must hold the stamp before the kill.
    let file = dir.path().join("groups.checkpoint");
    let stamp = format!(r#""empty_since_ms":{empty_since}"#);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !std::fs::read_to_string(&file).unwrap_or_default().contains(&stamp) {
        assert!(Instant::now() < deadline, "no checkpoint with {stamp}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(!saved.contains("look"), "ephemeral groups are not checkpointed: {saved}");
    drop((c, look));
    drop(mqd); // SIGKILL

    let mqd = spawn(&disk_args(data, hour));
    let mut c = Bin::connect(mqd.addr);
    let after = groups(&mut c);
    assert_eq!(after.len(), 1, "only the durable group comes back: {after:?}");
    assert_eq!(after[0].empty_since_ms, Some(empty_since), "the stamp survives the restart");
    assert!(after[0].expires_in_ms.is_some_and(|ms| ms <= 3_600_000));
    drop(c);
    drop(mqd);

    // Restarted with a shorter expiry than the group has been empty: it is deleted.
    let mqd = spawn(&disk_args(data, "1"));
    let mut c = Bin::connect(mqd.addr);
    let listed = groups_until(&mut c, <[GroupInfo]>::is_empty);
    assert!(listed.is_empty(), "expired at start: {listed:?}");
}
