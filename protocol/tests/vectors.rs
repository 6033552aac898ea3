//! The golden vectors of `spec/vectors/` against the codec, byte for byte.
//!
//! Every valid vector decodes to one value using all of its bytes and encodes back to exactly
//! the same bytes, in both dialects; every malformed vector gives exactly its error code and
//! fatality. The files must also cover every opcode, every text verb and every decode error.

mod common;

use std::collections::HashSet;

use bytes::BytesMut;
use mq_protocol::admin::{GroupsReply, HealthReply, InfoReply, StatsReply, TopicsReply};
use mq_protocol::{text, Dialect, ErrorCode, Limits, Opcode, ProtoError, Response, ServerCodec};

use common::{Kind, MalformedVector, VectorDialect};

#[test]
fn binary_requests_decode_and_reencode_byte_exactly() {
    for v in common::binary_vectors().iter().filter(|v| v.kind == Kind::Request) {
        let bytes = v.bytes();
        let (request_id, request) = common::decode_one_request(&v.name, &bytes);
        assert_ne!(request_id, 0, "{}: requests carry a non-zero request id", v.name);
        let encoded = common::encode_request(&request, request_id);
        assert_eq!(common::show(&encoded), common::show(&bytes), "{}: re-encoding", v.name);
        if let Some(text) = v.text() {
            let from_text = common::decode_one_text_request(&v.name, text);
            assert_eq!(from_text, request, "{}: text decodes to another request", v.name);
            let canonical = common::encode_text_request(&request);
            assert_eq!(common::show(&canonical), common::show(text), "{}: text form", v.name);
        }
    }
}

#[test]
fn binary_responses_decode_and_reencode_byte_exactly() {
    for v in common::binary_vectors().iter().filter(|v| v.kind == Kind::Response) {
        let bytes = v.bytes();
        let (request_id, response) = common::decode_one_response(&v.name, &bytes);
        let is_push = matches!(response, Response::Deliver(_));
        assert_eq!(request_id == 0, is_push, "{}: only pushes have request id 0", v.name);
        let encoded = common::encode_response(&response, request_id);
        assert_eq!(common::show(&encoded), common::show(&bytes), "{}: re-encoding", v.name);
        if let Some(text) = v.text() {
            let lines = common::encode_text_response(&response);
            assert_eq!(common::show(&lines), common::show(text), "{}: text form", v.name);
            let replies = common::decode_all_replies(&v.name, text);
            assert_eq!(replies, common::expected_replies(&response), "{}: text read back", v.name);
        }
    }
}

/// The JSON of every admin reply vector has exactly the fields, order and types of the
/// `admin` structs: it parses and serializes back to the same bytes.
#[test]
fn admin_reply_vectors_match_the_admin_types() {
    fn same<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str, json: &[u8]) {
        let value: T = serde_json::from_slice(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_vec(&value).expect("serializes");
        assert_eq!(common::show(&back), common::show(json), "{name}: JSON does not round-trip");
    }
    let mut seen = 0;
    for v in common::binary_vectors().iter().filter(|v| v.kind == Kind::Response) {
        let (_, response) = common::decode_one_response(&v.name, &v.bytes());
        match &response {
            Response::Info(json) => same::<InfoReply>(&v.name, json),
            Response::Health(json) => same::<HealthReply>(&v.name, json),
            Response::Stats(json) => same::<StatsReply>(&v.name, json),
            Response::Topics(json) => same::<TopicsReply>(&v.name, json),
            Response::Groups(json) => same::<GroupsReply>(&v.name, json),
            _ => continue,
        }
        seen += 1;
    }
    assert_eq!(seen, 5, "one vector per admin reply");
}

#[test]
fn text_requests_decode_to_their_binary_request_and_reencode_canonically() {
    for v in common::text_vectors().iter().filter(|v| v.kind == Kind::Request) {
        let (request_id, expected) = common::decode_one_request(&v.name, &v.binary());
        assert_eq!(request_id, 1, "{}: text vectors use request id 1 in binary", v.name);
        let request = common::decode_one_text_request(&v.name, v.input());
        assert_eq!(request, expected, "{}: text and binary differ", v.name);
        let canonical = common::encode_text_request(&request);
        assert_eq!(common::show(&canonical), common::show(v.canonical()), "{}: canonical", v.name);
        let again = common::decode_one_text_request(&v.name, &canonical);
        assert_eq!(again, request, "{}: the canonical form decodes to another request", v.name);
    }
}

#[test]
fn text_replies_round_trip_through_their_response() {
    for v in common::text_vectors().iter().filter(|v| v.kind == Kind::Reply) {
        let (_, response) = common::decode_one_response(&v.name, &v.binary());
        let lines = common::encode_text_response(&response);
        assert_eq!(common::show(&lines), common::show(v.input()), "{}: encode_response", v.name);
        let replies = common::decode_all_replies(&v.name, v.input());
        assert_eq!(replies, common::expected_replies(&response), "{}: decode_reply", v.name);
    }
}

/// What decoding a malformed vector gave: `Err(e)` for a fatal error, `Ok(e)` for a frame or
/// line refused with `e`, and the bytes left in the buffer.
fn decode_malformed(
    v: &MalformedVector,
    through_server_codec: bool,
) -> (Result<ProtoError, ProtoError>, usize) {
    let limits = Limits::default();
    let mut buf = BytesMut::from(&v.input()[..]);
    let outcome = match (through_server_codec, v.dialect) {
        (true, _) => ServerCodec::new(limits).decode(&mut buf),
        (false, VectorDialect::Binary) => mq_protocol::decode_request(&mut buf, &limits),
        (false, VectorDialect::Text) => text::decode_request(&mut buf, &limits),
    };
    let outcome = outcome.map(|decoded| {
        let decoded = decoded.unwrap_or_else(|| panic!("{}: incomplete", v.name));
        decoded.result.expect_err(&format!("{}: decoded without error", v.name))
    });
    (outcome, buf.len())
}

#[test]
fn malformed_vectors_give_their_error_code_and_fatality() {
    for v in common::malformed_vectors() {
        let code = ErrorCode::from_name(&v.error)
            .unwrap_or_else(|| panic!("{}: no error code named {}", v.name, v.error));
        assert_eq!(v.fatal, code.is_fatal(), "{}: `fatal` disagrees with {code}", v.name);
        let first_byte_selects_dialect = match Dialect::detect(v.input()[0]) {
            Ok(Dialect::Binary) => v.dialect == VectorDialect::Binary,
            Ok(Dialect::Text) => v.dialect == VectorDialect::Text,
            Err(_) => false,
        };
        let is_bad_start = code == ErrorCode::BAD_START;
        if is_bad_start {
            assert!(!first_byte_selects_dialect, "{}: the first byte is good", v.name);
        }

        let (outcome, left) = decode_malformed(&v, is_bad_start);
        match outcome {
            Err(e) => {
                assert!(v.fatal, "{}: fatal Err {e} for a non-fatal vector", v.name);
                assert_eq!(e.code(), code, "{}: {e}", v.name);
            }
            Ok(e) => {
                assert!(!v.fatal, "{}: non-fatal {e} for a fatal vector", v.name);
                assert_eq!(e.code(), code, "{}: {e}", v.name);
                assert_eq!(left, 0, "{}: a refused frame or line is consumed whole", v.name);
            }
        }
        if first_byte_selects_dialect {
            // As the first bytes of a connection, the vector must be refused the same way.
            let via_codec = decode_malformed(&v, true);
            let direct = decode_malformed(&v, false);
            assert_eq!(via_codec, direct, "{}: ServerCodec disagrees", v.name);
        }
    }
}

#[test]
fn vector_files_cover_every_opcode() {
    let opcodes: HashSet<u8> = common::binary_vectors().iter().map(|v| v.bytes()[2]).collect();
    for op in Opcode::ALL {
        assert!(opcodes.contains(&(*op as u8)), "binary.toml has no {} vector", op.name());
    }
}

#[test]
fn vector_files_cover_every_text_verb() {
    let verbs: HashSet<String> = common::text_vectors()
        .iter()
        .filter(|v| v.kind == Kind::Request)
        .map(|v| {
            let line = String::from_utf8_lossy(v.input()).into_owned();
            line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase()
        })
        .collect();
    let all = [
        "PING", "AUTH", "INFO", "HEALTH", "STATS", "TOPICS", "GROUPS", "PUB", "CREATE", "SUB",
        "UNSUB", "CREDIT", "ACK", "NACK", "REJECT", "DELGROUP",
    ];
    for verb in all {
        assert!(verbs.contains(verb), "text.toml has no {verb} vector");
    }
    let replies = common::text_vectors().iter().filter(|v| v.kind == Kind::Reply).count();
    assert!(replies >= 4, "text.toml has {replies} reply vectors");
}

/// Every error a decoder can produce (codes 100 to 199) has a malformed vector.
#[test]
fn malformed_vectors_cover_every_decode_error() {
    let named: HashSet<String> = common::malformed_vectors().into_iter().map(|v| v.error).collect();
    for code in ErrorCode::ALL.iter().filter(|c| (100..200).contains(&c.0)) {
        assert!(named.contains(code.name()), "malformed.toml has no {code} vector");
    }
}

#[test]
fn vector_names_are_unique_in_each_file() {
    let files = [
        ("binary.toml", common::binary_vectors().into_iter().map(|v| v.name).collect::<Vec<_>>()),
        ("text.toml", common::text_vectors().into_iter().map(|v| v.name).collect()),
        ("malformed.toml", common::malformed_vectors().into_iter().map(|v| v.name).collect()),
    ];
    for (file, names) in files {
        let mut seen = HashSet::new();
        for name in names {
            assert!(seen.insert(name.clone()), "{file}: vector name {name} is used twice");
        }
    }
}

/// `SUBSCRIBE` (0x20), as every client before group kinds sends it, still means a durable
/// group, and only `SUBSCRIBE_EPHEMERAL` (0x24) makes an ephemeral one; the text `SUB` line
/// without the `ephemeral` word is durable too.
#[test]
fn subscribe_opcodes_choose_the_group_kind() {
    use mq_protocol::{GroupKind, Request};
    let mut seen = HashSet::new();
    for v in common::binary_vectors().iter().filter(|v| v.kind == Kind::Request) {
        let (_, request) = common::decode_one_request(&v.name, &v.bytes());
        if let Request::Subscribe { kind, .. } = request {
            let expected = match v.bytes()[2] {
                0x20 => GroupKind::Durable,
                0x24 => GroupKind::Ephemeral,
                other => panic!("{}: SUBSCRIBE under opcode {other:#04x}", v.name),
            };
            assert_eq!(kind, expected, "{}", v.name);
            let text = String::from_utf8_lossy(v.text().expect("subscribe vectors have text"));
            assert_eq!(text.contains(" ephemeral"), kind == GroupKind::Ephemeral, "{}", v.name);
            seen.insert(v.bytes()[2]);
        }
    }
    assert_eq!(seen.len(), 2, "vectors of both SUBSCRIBE opcodes");
}
