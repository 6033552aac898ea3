//! Every golden vector decoded from every possible split of its bytes.
//!
//! A socket hands bytes over in pieces of any size, so a decoder must answer "incomplete"
//! (`Ok(None)`, nothing consumed) at every proper prefix, give the value at the last byte and
//! not before, and give the same value however the bytes were split. Back-to-back values
//! must come out one at a time, in order. Malformed frames must read as incomplete until the
//! byte that shows the fault arrives.

mod common;

use std::fmt::Debug;

use bytes::{BufMut, BytesMut};
use mq_protocol::text::{self, TextReply};
use mq_protocol::{Decoded, Limits, ProtoError, Request, Response, ServerCodec};

use common::{Kind, VectorDialect};

type DecodeFn<T> = fn(&mut BytesMut) -> Result<Option<T>, ProtoError>;

fn binary_request(buf: &mut BytesMut) -> Result<Option<Decoded<Request>>, ProtoError> {
    mq_protocol::decode_request(buf, &Limits::default())
}

fn binary_response(buf: &mut BytesMut) -> Result<Option<Decoded<Response>>, ProtoError> {
    mq_protocol::decode_response(buf, &Limits::default())
}

fn text_request(buf: &mut BytesMut) -> Result<Option<Decoded<Request>>, ProtoError> {
    text::decode_request(buf, &Limits::default())
}

fn text_reply(buf: &mut BytesMut) -> Result<Option<TextReply>, ProtoError> {
    text::decode_reply(buf, &Limits::default())
}

/// Feeds `bytes` one at a time; returns the value, which must appear at the last byte only.
#[track_caller]
fn decode_byte_by_byte<T: Debug>(name: &str, bytes: &[u8], decode: DecodeFn<T>) -> T {
    let mut buf = BytesMut::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.put_u8(b);
        let outcome = decode(&mut buf).unwrap_or_else(|e| panic!("{name}: byte {i}: {e}"));
        if i + 1 < bytes.len() {
            assert!(outcome.is_none(), "{name}: a value after {} of {} bytes", i + 1, bytes.len());
            assert_eq!(buf.len(), i + 1, "{name}: bytes consumed while incomplete");
        } else {
            assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
            return outcome.unwrap_or_else(|| panic!("{name}: still incomplete at its end"));
        }
    }
    panic!("{name}: empty vector")
}

/// Feeds `bytes[..k]`, then the rest, for every `k`: always the value `expected`.
#[track_caller]
fn decode_at_every_split<T: Debug + PartialEq>(
    name: &str,
    bytes: &[u8],
    expected: &T,
    decode: DecodeFn<T>,
) {
    for k in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..k]);
        let first = decode(&mut buf).unwrap_or_else(|e| panic!("{name}: split {k}: {e}"));
        assert!(first.is_none(), "{name}: a value from the first {k} bytes");
        buf.extend_from_slice(&bytes[k..]);
        let value = decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: split {k}: {e}"))
            .unwrap_or_else(|| panic!("{name}: split {k}: incomplete"));
        assert_eq!(&value, expected, "{name}: split {k} gives another value");
        assert!(buf.is_empty(), "{name}: split {k}: bytes left over");
    }
}

/// Every vector on its own, byte by byte and at every split; then every ordered pair back to
/// back; then all of them as one stream in pieces of 1, 2, 3, … bytes.
fn check_all<T: Debug + PartialEq>(vectors: &[(String, Vec<u8>)], decode: DecodeFn<T>) {
    let values: Vec<T> = vectors
        .iter()
        .map(|(name, bytes)| {
            let value = decode_byte_by_byte(name, bytes, decode);
            decode_at_every_split(name, bytes, &value, decode);
            value
        })
        .collect();
    for (a, (name_a, bytes_a)) in vectors.iter().enumerate() {
        for (b, (name_b, bytes_b)) in vectors.iter().enumerate() {
            let mut buf = BytesMut::from(&bytes_a[..]);
            buf.extend_from_slice(bytes_b);
            let first = decode(&mut buf).expect("decodes").expect("complete");
            assert_eq!(first, values[a], "{name_a} then {name_b}: first value");
            assert_eq!(buf.len(), bytes_b.len(), "{name_a} then {name_b}: first consumed");
            let second = decode(&mut buf).expect("decodes").expect("complete");
            assert_eq!(second, values[b], "{name_a} then {name_b}: second value");
            assert!(buf.is_empty(), "{name_a} then {name_b}: bytes left over");
        }
    }
    let stream: Vec<u8> = vectors.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for (i, piece) in pieces(&stream).enumerate() {
        buf.extend_from_slice(piece);
        while let Some(value) = decode(&mut buf).unwrap_or_else(|e| panic!("piece {i}: {e}")) {
            decoded.push(value);
        }
    }
    assert!(buf.is_empty(), "stream: bytes left over");
    assert_eq!(decoded, values, "stream: values differ");
}

/// `bytes` cut into pieces of 1, 2, 3, … 13, 1, 2, … bytes.
fn pieces(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    let mut size = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        size = size % 13 + 1;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(piece)
    })
}

fn binary_of(kind: Kind) -> Vec<(String, Vec<u8>)> {
    common::binary_vectors()
        .into_iter()
        .filter(|v| v.kind == kind)
        .map(|v| (v.name.clone(), v.bytes()))
        .collect()
}

fn text_of(kind: Kind) -> Vec<(String, Vec<u8>)> {
    common::text_vectors()
        .into_iter()
        .filter(|v| v.kind == kind)
        .map(|v| (v.name.clone(), v.input().to_vec()))
        .collect()
}

#[test]
fn binary_requests_decode_only_at_their_last_byte() {
    check_all(&binary_of(Kind::Request), binary_request);
}

#[test]
fn binary_responses_decode_only_at_their_last_byte() {
    check_all(&binary_of(Kind::Response), binary_response);
}

#[test]
fn text_requests_decode_only_at_their_last_byte() {
    let mut vectors = text_of(Kind::Request);
    let canonical = common::binary_vectors()
        .into_iter()
        .filter(|v| v.kind == Kind::Request)
        .filter_map(|v| Some((v.name.clone(), v.text()?.to_vec())));
    vectors.extend(canonical);
    check_all(&vectors, text_request);
}

#[test]
fn text_replies_decode_only_at_their_last_byte() {
    let mut vectors = text_of(Kind::Reply);
    let one_line_responses = common::binary_vectors()
        .into_iter()
        .filter(|v| v.kind == Kind::Response && v.name != "deliver_two_records")
        .filter_map(|v| Some((v.name.clone(), v.text()?.to_vec())));
    vectors.extend(one_line_responses);
    check_all(&vectors, text_reply);
}

/// A malformed vector reads as incomplete until the byte that shows the fault; from then on
/// every longer prefix gives the same error (fatal), or, for a frame or line that is well
/// delimited but refused, the error comes at the last byte only.
#[test]
fn malformed_vectors_are_incomplete_until_the_faulty_byte() {
    for v in common::malformed_vectors() {
        let input = v.input();
        let mut first_error_at = None;
        for k in 0..=input.len() {
            let mut buf = BytesMut::from(&input[..k]);
            let outcome = match v.dialect {
                _ if v.error == "BAD_START" => ServerCodec::new(Limits::default()).decode(&mut buf),
                VectorDialect::Binary => binary_request(&mut buf),
                VectorDialect::Text => text_request(&mut buf),
            };
            match outcome {
                Ok(None) => {
                    assert!(first_error_at.is_none(), "{}: incomplete again at {k}", v.name);
                    assert_eq!(buf.len(), k, "{}: bytes consumed while incomplete", v.name);
                }
                Ok(Some(decoded)) => {
                    assert!(!v.fatal, "{}: a fatal vector decoded at {k}", v.name);
                    assert_eq!(k, input.len(), "{}: refused before its last byte", v.name);
                    assert_eq!(decoded.result.expect_err("refused").code().name(), v.error);
                }
                Err(e) => {
                    assert!(v.fatal, "{}: a non-fatal vector failed at {k}: {e}", v.name);
                    assert_eq!(e.code().name(), v.error, "{}: prefix {k}", v.name);
                    first_error_at.get_or_insert(k);
                }
            }
        }
        assert_eq!(first_error_at.is_some(), v.fatal, "{}", v.name);
    }
}
