//! `mqctl` as a user runs it: the real binary against an in-process broker, checking what
//! it prints and its exit codes (0 ok, 1 broker error or unreachable, 2 usage).

mod common;

use common::{dead_addr, run, start_broker, Run};
use mq_client::protocol::admin::{GroupsReply, HealthReply, InfoReply, StatsReply, TopicsReply};

const MQCTL: &str = env!("CARGO_BIN_EXE_mqctl");

#[track_caller]
fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r
}

/// Goal: an unreachable broker is one clear line and exit 1.
#[test]
fn an_unreachable_broker_is_exit_1_with_a_clear_message() {
    let dead = dead_addr();
    let r = run(MQCTL, Some(dead), &["topics"], "");
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!("mqctl: cannot reach broker at {dead}: connection refused")
    );
    let r = run(MQCTL, Some(dead), &["raw"], "PING\n");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot reach broker"), "{}", r.stderr);
}

/// Goal: usage mistakes are exit 2, whether clap or mqctl finds them.
#[test]
fn usage_errors_are_exit_2() {
    let broker = start_broker();
    for args in [
        &["bogus"][..],
        &[],
        &["publish", "t"],
        &["tail"],
        &["stats", "--interval", "soon"],
        &["publish", "bad/topic", "x"],
        &["publish", "t", "--key", "has space", "x"],
    ] {
        let r = run(MQCTL, Some(broker.addr), args, "");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    assert_eq!(ok(run(MQCTL, None, &["--help"], "")).code, 0);
}

/// Goal: publishing, listing and tailing work end to end, in tables and in JSON.
#[test]
fn publish_then_list_and_tail() {
    let broker = start_broker();
    let addr = Some(broker.addr);
    let r = ok(run(MQCTL, addr, &["publish", "telemetry", "--key", "gpu-0", "hello"], ""));
    assert_eq!(r.stdout, "partition 8 offset 0\n");
    let r = ok(run(MQCTL, addr, &["publish", "telemetry", "-", "--json"], "a\nb\nc\n"));
    assert_eq!(r.stdout.trim(), r#"{"published":3}"#);

    let r = ok(run(MQCTL, addr, &["topics"], ""));
    assert!(r.stdout.starts_with("TOPIC"), "{}", r.stdout);
    assert!(r.stdout.lines().any(|l| l.starts_with("telemetry") && l.contains(" 4 ")));
    let topics: TopicsReply =
        serde_json::from_str(&ok(run(MQCTL, addr, &["topics", "--json"], "")).stdout).unwrap();
    assert_eq!(topics.topics[0].records, 4);

    let r = ok(run(
        MQCTL,
        addr,
        &["tail", "telemetry", "--from", "earliest", "--count", "4", "--json"],
        "",
    ));
    let values: Vec<serde_json::Value> =
        r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(values.len(), 4);
    let hello = values.iter().find(|v| v["key"] == "gpu-0").unwrap();
    assert_eq!((hello["value"].as_str(), hello["partition"].as_u64()), (Some("hello"), Some(8)));
    let r = ok(run(
        MQCTL,
        addr,
        &["tail", "telemetry", "--group", "g", "--from", "earliest", "--count", "1"],
        "",
    ));
    assert_eq!(r.stdout.lines().count(), 1);
    assert!(r.stdout.starts_with("0:0 a") || r.stdout.contains("key=gpu-0"), "{}", r.stdout);

    let groups: GroupsReply =
        serde_json::from_str(&ok(run(MQCTL, addr, &["groups", "--json"], "")).stdout).unwrap();
    assert!(groups.groups.iter().any(|g| g.group == "g"));
    let r = ok(run(MQCTL, addr, &["groups"], ""));
    assert!(r.stdout.starts_with("GROUP") && r.stdout.contains("telemetry"));
}

/// Goal: the admin listings print tables with their headers, and `--json` documents that
/// parse as the protocol's types.
#[test]
fn admin_listings_in_tables_and_json() {
    let broker = start_broker();
    let addr = Some(broker.addr);
    ok(run(MQCTL, addr, &["publish", "t", "x"], ""));
    let r = ok(run(MQCTL, addr, &["stats", "--interval", "0.1"], ""));
    assert!(r.stdout.starts_with("broker: up"), "{}", r.stdout);
    assert!(
        r.stdout.contains("TOPIC") && r.stdout.contains("PARTITION") && r.stdout.contains("GROUP")
    );
    assert!(r.stdout.lines().any(|l| l.starts_with("t ") && l.contains("all")), "{}", r.stdout);
    let stats: StatsReply =
        serde_json::from_str(&ok(run(MQCTL, addr, &["stats", "--json"], "")).stdout).unwrap();
    assert_eq!(stats.topics[0].records_in, 1);

    let r = ok(run(MQCTL, addr, &["health"], ""));
    assert!(r.stdout.starts_with("ok (up"), "{}", r.stdout);
    let health: HealthReply =
        serde_json::from_str(&ok(run(MQCTL, addr, &["health", "--json"], "")).stdout).unwrap();
    assert_eq!(health.status, "ok");
    let info: InfoReply =
        serde_json::from_str(&ok(run(MQCTL, addr, &["info", "--json"], "")).stdout).unwrap();
    assert_eq!(info.storage, "memory");
    assert!(ok(run(MQCTL, addr, &["info"], "")).stdout.contains("storage"));
}

/// Goal: a broker error is exit 1 with the code's name.
#[test]
fn create_topic_and_a_broker_error() {
    let broker = start_broker();
    let addr = Some(broker.addr);
    let r = ok(run(MQCTL, addr, &["create-topic", "made", "--partitions", "4"], ""));
    assert_eq!(r.stdout, "created topic made\n");
    ok(run(MQCTL, addr, &["create-topic", "made", "--partitions", "4", "--json"], ""));
    let r = run(MQCTL, addr, &["create-topic", "made", "--partitions", "5"], "");
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("mqctl: broker error TOPIC_EXISTS"), "{}", r.stderr);
}

/// Goal: `raw` is a text session that also works from a pipe.
#[test]
fn raw_pipes_a_text_session() {
    let broker = start_broker();
    let r = ok(run(MQCTL, Some(broker.addr), &["raw"], "PING\nPUB t 5\nhello\n"));
    assert_eq!(r.stdout, "+PONG\r\n+OK 0 0\r\n");
}

fn groups_json(addr: Option<std::net::SocketAddr>) -> GroupsReply {
    serde_json::from_str(&ok(run(MQCTL, addr, &["groups", "--json"], "")).stdout).unwrap()
}

/// Goal (issue 13): a `tail` without `--group` leaves no group behind; one with `--group`
/// keeps its durable group, which `delete-group` then removes.
#[test]
fn tail_without_a_group_leaves_nothing_and_delete_group_removes_a_durable_one() {
    let broker = start_broker();
    let addr = Some(broker.addr);
    ok(run(MQCTL, addr, &["publish", "telemetry", "-"], "a\nb\n"));
    let args = ["tail", "telemetry", "--from", "earliest", "--count", "1"];
    assert_eq!(ok(run(MQCTL, addr, &args, "")).stdout.lines().count(), 1);
    let left = groups_json(addr);
    assert!(
        left.groups.iter().all(|g| !g.group.starts_with("mqctl-tail-")),
        "tail left its group behind: {left:?}"
    );

    let args = ["tail", "telemetry", "--group", "kept", "--from", "earliest", "--count", "1"];
    ok(run(MQCTL, addr, &args, ""));
    let kept = groups_json(addr);
    let g = kept.groups.iter().find(|g| g.group == "kept").expect("a named group stays");
    assert_eq!((g.kind.as_str(), g.members, g.lag), ("durable", 0, 1));
    assert!(g.expires_in_ms.is_some(), "an empty durable group is on the expiry clock");
    let table = ok(run(MQCTL, addr, &["groups"], "")).stdout;
    assert!(table.lines().next().unwrap().contains("KIND"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("kept") && l.contains("durable")), "{table}");

    let r = ok(run(MQCTL, addr, &["delete-group", "telemetry", "kept"], ""));
    assert_eq!(r.stdout, "deleted group kept on telemetry\n");
    assert!(groups_json(addr).groups.is_empty());
    let r = run(MQCTL, addr, &["delete-group", "telemetry", "kept"], "");
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("mqctl: broker error NO_SUCH_GROUP"), "{}", r.stderr);
    let r = run(MQCTL, addr, &["delete-group", "telemetry", "bad/name"], "");
    assert_eq!(r.code, 2, "a bad name is a usage error: {}", r.stderr);
}

/// Goal: `delete-group` refuses a group with members (exit 1, `GROUP_ACTIVE`) and prints
/// JSON with `--json`.
#[test]
fn delete_group_refuses_a_group_with_members_and_speaks_json() {
    use mq_client::{Client, ClientConfig, ConsumerConfig};
    let broker = start_broker();
    let addr = Some(broker.addr);
    let client = Client::connect(&[broker.addr], ClientConfig::default()).unwrap();
    let member = client.subscribe("telemetry", "busy", ConsumerConfig::default()).unwrap();
    let r = run(MQCTL, addr, &["delete-group", "telemetry", "busy"], "");
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("mqctl: broker error GROUP_ACTIVE"), "{}", r.stderr);
    member.close().unwrap();
    let r = ok(run(MQCTL, addr, &["delete-group", "telemetry", "busy", "--json"], ""));
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v, serde_json::json!({"deleted": {"topic": "telemetry", "group": "busy"}}));
}
