//! Loads the golden vectors of `spec/vectors/*.toml` for the integration tests.
//!
//! The files are language-neutral: each file's header comment describes its fields. Hex
//! fields may carry `#` comments and any whitespace; [`hex_bytes`] strips both.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::PathBuf;

use bytes::BytesMut;
use mq_protocol::text::{self, TextReply};
use mq_protocol::{Limits, Request, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Whether a vector is something a client sends, the broker sends, or a text reply line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Client to broker.
    Request,
    /// Broker to client, binary.
    Response,
    /// Broker to client, text.
    Reply,
}

/// One vector of `binary.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryVector {
    pub name: String,
    pub kind: Kind,
    binary: String,
    text: Option<String>,
}

impl BinaryVector {
    pub fn bytes(&self) -> Vec<u8> {
        hex_bytes(&self.name, &self.binary)
    }

    pub fn text(&self) -> Option<&[u8]> {
        self.text.as_deref().map(str::as_bytes)
    }
}

/// One vector of `text.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextVector {
    pub name: String,
    #[serde(default = "request_kind")]
    pub kind: Kind,
    input: String,
    canonical: Option<String>,
    binary: String,
}

fn request_kind() -> Kind {
    Kind::Request
}

impl TextVector {
    pub fn input(&self) -> &[u8] {
        self.input.as_bytes()
    }

    /// What re-encoding the decoded value must give.
    pub fn canonical(&self) -> &[u8] {
        self.canonical.as_deref().unwrap_or(&self.input).as_bytes()
    }

    pub fn binary(&self) -> Vec<u8> {
        hex_bytes(&self.name, &self.binary)
    }
}

/// The dialect a malformed vector is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorDialect {
    Binary,
    Text,
}

/// One vector of `malformed.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MalformedVector {
    pub name: String,
    pub dialect: VectorDialect,
    input: String,
    repeat: Option<usize>,
    pub error: String,
    pub fatal: bool,
}

impl MalformedVector {
    pub fn input(&self) -> Vec<u8> {
        let once = match self.dialect {
            VectorDialect::Binary => hex_bytes(&self.name, &self.input),
            VectorDialect::Text => self.input.as_bytes().to_vec(),
        };
        once.repeat(self.repeat.unwrap_or(1))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File<T> {
    vector: Vec<T>,
}

fn load<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "..", "spec", "vectors", file].iter().collect();
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let parsed: File<T> =
        toml::from_str(&source).unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()));
    assert!(!parsed.vector.is_empty(), "{} has no vectors", path.display());
    parsed.vector
}

pub fn binary_vectors() -> Vec<BinaryVector> {
    load("binary.toml")
}

pub fn text_vectors() -> Vec<TextVector> {
    load("text.toml")
}

pub fn malformed_vectors() -> Vec<MalformedVector> {
    load("malformed.toml")
}

/// The bytes of a commented hex field: everything after `#` on a line is dropped, and so is
/// all whitespace.
///
/// # Panics
/// On an odd number of digits or a non-hex character, naming the vector.
pub fn hex_bytes(name: &str, field: &str) -> Vec<u8> {
    let digits: String = field
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("vector {name}: bad hex: {e}"))
}

/// Decodes exactly one binary request frame, which must use all of `bytes`.
#[track_caller]
pub fn decode_one_request(name: &str, bytes: &[u8]) -> (u32, Request) {
    let mut buf = BytesMut::from(bytes);
    let decoded = mq_protocol::decode_request(&mut buf, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: fatal error {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
    let request = decoded.result.unwrap_or_else(|e| panic!("{name}: {e}"));
    (decoded.request_id, request)
}

/// Decodes exactly one binary response frame, which must use all of `bytes`.
#[track_caller]
pub fn decode_one_response(name: &str, bytes: &[u8]) -> (u32, Response) {
    let mut buf = BytesMut::from(bytes);
    let decoded = mq_protocol::decode_response(&mut buf, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: fatal error {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
    let response = decoded.result.unwrap_or_else(|e| panic!("{name}: {e}"));
    (decoded.request_id, response)
}

/// Decodes exactly one text request, which must use all of `bytes`.
#[track_caller]
pub fn decode_one_text_request(name: &str, bytes: &[u8]) -> Request {
    let mut buf = BytesMut::from(bytes);
    let decoded = text::decode_request(&mut buf, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: fatal error {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
    assert_eq!(decoded.request_id, 0, "{name}: text has no request id");
    decoded.result.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Decodes text reply lines until `bytes` is used up.
#[track_caller]
pub fn decode_all_replies(name: &str, bytes: &[u8]) -> Vec<TextReply> {
    let mut buf = BytesMut::from(bytes);
    let mut replies = Vec::new();
    while !buf.is_empty() {
        let reply = text::decode_reply(&mut buf, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete reply"));
        replies.push(reply);
    }
    replies
}

/// The text replies a response reads back as: what `text::decode_reply` must return for the
/// output of `text::encode_response`. MSG carries no timestamp, so it reads back as 0.
pub fn expected_replies(response: &Response) -> Vec<TextReply> {
    let ok = |rest: String| vec![TextReply::Ok(rest)];
    match response {
        Response::Pong => vec![TextReply::Pong],
        Response::Ok => ok(String::new()),
        Response::Info(json)
        | Response::Health(json)
        | Response::Stats(json)
        | Response::Topics(json)
        | Response::Groups(json) => ok(String::from_utf8(json.to_vec()).expect("JSON is UTF-8")),
        Response::Published(placements) => ok(placements
            .iter()
            .map(|p| format!("{} {}", p.partition, p.offset))
            .collect::<Vec<_>>()
            .join(" ")),
        Response::Subscribed { partitions } => ok(partitions.to_string()),
        Response::Deliver(deliver) => deliver
            .records
            .iter()
            .map(|d| TextReply::Msg {
                topic: deliver.topic.clone(),
                delivery: mq_protocol::Delivery { timestamp_ms: 0, ..d.clone() },
            })
            .collect(),
        Response::Error { code, message } => {
            vec![TextReply::Err { code: *code, message: message.clone() }]
        }
    }
}

/// Encodes a request as a binary frame.
pub fn encode_request(request: &Request, request_id: u32) -> Vec<u8> {
    let mut out = BytesMut::new();
    request.encode(request_id, u32::MAX, &mut out).expect("encodes");
    out.to_vec()
}

/// Encodes a response as a binary frame.
pub fn encode_response(response: &Response, request_id: u32) -> Vec<u8> {
    let mut out = BytesMut::new();
    response.encode(request_id, u32::MAX, &mut out).expect("encodes");
    out.to_vec()
}

/// Encodes a request in its canonical text form.
pub fn encode_text_request(request: &Request) -> Vec<u8> {
    let mut out = BytesMut::new();
    text::encode_request(request, &mut out);
    out.to_vec()
}

/// Encodes a response as text lines.
pub fn encode_text_response(response: &Response) -> Vec<u8> {
    let mut out = BytesMut::new();
    text::encode_response(response, &mut out);
    out.to_vec()
}

/// Bytes as a readable string for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
