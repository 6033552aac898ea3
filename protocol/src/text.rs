//! The text dialect, for people with `nc`: command lines in, `+OK`/`-ERR`/`MSG` lines out.
//!
//! A line ends at `\n`; a `\r` just before it is dropped. Verbs are case-insensitive and
//! arguments are separated by spaces or tabs. A payload (`PUB`) is length-prefixed on its
//! command line, follows on the next line and ends with `\r\n` or `\n`, so it may hold any
//! bytes. Empty lines are ignored. The broker ends every line it sends with `\r\n`.
//! `spec/text.md` has the grammar of every verb, its reply and a replayable transcript.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Decoded;
use crate::error::ErrorCode;
use crate::limits::Limits;
use crate::request::{CreateTopic, GroupKind, OffsetRange, Record, Request, StartPosition};
use crate::response::{truncate_utf8, Delivery, Response};
use crate::ProtoError;

/// Default credit of a `SUB` line that does not name one.
pub const SUB_CREDIT_DEFAULT: u32 = 1024;

/// Decodes one request from the start of `buf`, consuming its bytes.
///
/// Returns `Ok(None)` while the request is incomplete (nothing is consumed then).
/// A request that is framed correctly but invalid is consumed and returned as
/// `Decoded { result: Err(..) }`; the connection may go on.
///
/// # Errors
/// Fatal framing errors: [`ProtoError::LineTooLong`], [`ProtoError::FrameTooLarge`] (a payload
/// above the limit) and [`ProtoError::Parse`] (a payload length or terminator that is not
/// valid). The connection must be closed after them.
pub fn decode_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Decoded<Request>>, ProtoError> {
    loop {
        let Some(line_end) = find_line_end(buf, limits.line_bytes_max)? else {
            return Ok(None);
        };
        let line = trim_cr(&buf[..line_end]);
        let words: Vec<&[u8]> =
            line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).collect();
        let Some(verb) = words.first() else {
            let _ = buf.split_to(line_end + 1);
            continue;
        };
        if verb.eq_ignore_ascii_case(b"PUB") {
            return decode_pub(buf, line_end, limits);
        }
        let result = parse_command(&words);
        let _ = buf.split_to(line_end + 1);
        return Ok(Some(Decoded { request_id: 0, result: result.and_then(validated) }));
    }
}

fn validated(request: Request) -> Result<Request, ProtoError> {
    request.validate()?;
    Ok(request)
}

/// Index of the `\n` ending the first line, if it is within the limit.
fn find_line_end(buf: &[u8], line_bytes_max: usize) -> Result<Option<usize>, ProtoError> {
    let window = &buf[..buf.len().min(line_bytes_max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(i)),
        None if buf.len() >= line_bytes_max => Err(ProtoError::LineTooLong { max: line_bytes_max }),
        None => Ok(None),
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `PUB <topic> [<key>] <nbytes>` then the payload line.
fn decode_pub(
    buf: &mut BytesMut,
    line_end: usize,
    limits: &Limits,
) -> Result<Option<Decoded<Request>>, ProtoError> {
    let line = trim_cr(&buf[..line_end]);
    let words: Vec<&[u8]> =
        line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).collect();
    let nbytes_word = words.last().copied().unwrap_or_default();
    let nbytes = parse_u64(nbytes_word, "payload length")
        .map_err(|_| ProtoError::Parse("PUB needs a payload length as its last argument".into()))?;
    if nbytes > u64::from(limits.frame_body_bytes_max) {
        return Err(ProtoError::FrameTooLarge {
            body_len: nbytes,
            max: u64::from(limits.frame_body_bytes_max),
        });
    }
    let payload_at = line_end + 1;
    let payload_end = payload_at + nbytes as usize;
    let terminator_bytes = match buf.get(payload_end) {
        None => return Ok(None),
        Some(b'\n') => 1,
        Some(b'\r') => match buf.get(payload_end + 1) {
            None => return Ok(None),
            Some(b'\n') => 2,
            Some(_) => return Err(ProtoError::Parse("payload must end with \\r\\n or \\n".into())),
        },
        Some(_) => {
            return Err(ProtoError::Parse(format!(
                "payload longer than the {nbytes} bytes announced"
            )))
        }
    };
    let args: Vec<Result<String, ProtoError>> =
        words[1..words.len() - 1].iter().map(|w| utf8(w).map(str::to_string)).collect();
    let result = match args.as_slice() {
        [topic] => topic.clone().map(|t| (t, None)),
        [topic, key] => topic.clone().and_then(|t| key.clone().map(|k| (t, Some(Bytes::from(k))))),
        _ => Err(ProtoError::BadArg("usage: PUB <topic> [<key>] <nbytes>".into())),
    };
    let mut frame = buf.split_to(payload_end + terminator_bytes);
    let value = frame.split_off(payload_at).freeze().slice(..nbytes as usize);
    let result = result.and_then(|(topic, key)| {
        validated(Request::Publish { topic, records: vec![Record { key, value }] })
    });
    Ok(Some(Decoded { request_id: 0, result }))
}

fn utf8(word: &[u8]) -> Result<&str, ProtoError> {
    std::str::from_utf8(word).map_err(|_| ProtoError::BadArg("argument is not UTF-8".into()))
}

fn parse_u64(word: &[u8], what: &str) -> Result<u64, ProtoError> {
    let bad = || {
        ProtoError::BadArg(format!(
            "{what} must be a decimal number, got {:?}",
            String::from_utf8_lossy(word)
        ))
    };
    if word.is_empty() || word.len() > 20 || !word.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(word).map_err(|_| bad())?.parse::<u64>().map_err(|_| bad())
}

fn parse_u32(word: &[u8], what: &str) -> Result<u32, ProtoError> {
    let n = parse_u64(word, what)?;
    u32::try_from(n).map_err(|_| ProtoError::BadArg(format!("{what} {n} is above {}", u32::MAX)))
}

fn usage(text: &str) -> ProtoError {
    ProtoError::BadArg(format!("usage: {text}"))
}

/// Parses a command line other than `PUB`.
fn parse_command(words: &[&[u8]]) -> Result<Request, ProtoError> {
    let verb = String::from_utf8_lossy(words[0]).to_ascii_uppercase();
    let args = &words[1..];
    let s = |i: usize| -> Result<String, ProtoError> { Ok(utf8(args[i])?.to_string()) };
    let no_args = |request: Request| if args.is_empty() { Ok(request) } else { Err(usage(&verb)) };
    match verb.as_str() {
        "PING" => no_args(Request::Ping),
        "INFO" => no_args(Request::Info),
        "HEALTH" => no_args(Request::Health),
        "STATS" => no_args(Request::Stats),
        "TOPICS" => no_args(Request::Topics),
        "GROUPS" => no_args(Request::Groups),
        "AUTH" if args.len() == 1 => Ok(Request::Auth { token: s(0)? }),
        "AUTH" => Err(usage("AUTH <token>")),
        "CREATE" => parse_create(args),
        "SUB" => parse_sub(args),
        "UNSUB" if args.len() == 2 => Ok(Request::Unsubscribe { topic: s(0)?, group: s(1)? }),
        "UNSUB" => Err(usage("UNSUB <topic> <group>")),
        "DELGROUP" if args.len() == 2 => Ok(Request::DeleteGroup { topic: s(0)?, group: s(1)? }),
        "DELGROUP" => Err(usage("DELGROUP <topic> <group>")),
        "CREDIT" if args.len() == 3 => Ok(Request::Credit {
            topic: s(0)?,
            group: s(1)?,
            credit: parse_u32(args[2], "credit")?,
        }),
        "CREDIT" => Err(usage("CREDIT <topic> <group> <credit>")),
        "ACK" if args.len() == 4 => Ok(Request::Ack {
            topic: s(0)?,
            group: s(1)?,
            ranges: vec![parse_range(args[2], args[3])?],
        }),
        "ACK" => Err(usage("ACK <topic> <group> <partition> <offset>[-<last_offset>]")),
        "NACK" if args.len() == 4 || args.len() == 5 => {
            let delay_ms = args.get(4).map(|w| parse_u32(w, "delay_ms")).transpose()?.unwrap_or(0);
            let ranges = vec![parse_range(args[2], args[3])?];
            Ok(Request::Nack { topic: s(0)?, group: s(1)?, delay_ms, ranges })
        }
        "NACK" => {
            Err(usage("NACK <topic> <group> <partition> <offset>[-<last_offset>] [<delay_ms>]"))
        }
        "REJECT" if args.len() == 4 => Ok(Request::Reject {
            topic: s(0)?,
            group: s(1)?,
            ranges: vec![parse_range(args[2], args[3])?],
        }),
        "REJECT" => Err(usage("REJECT <topic> <group> <partition> <offset>[-<last_offset>]")),
        _ => Err(ProtoError::UnknownVerb(truncate_utf8(&verb, 32).to_string())),
    }
}

/// `CREATE <topic> [<partitions> [<retention_bytes> [<retention_ms>]]]`.
fn parse_create(args: &[&[u8]]) -> Result<Request, ProtoError> {
    if args.is_empty() || args.len() > 4 {
        return Err(usage("CREATE <topic> [<partitions> [<retention_bytes> [<retention_ms>]]]"));
    }
    let number = |i: usize, what: &str| args.get(i).map(|w| parse_u64(w, what)).transpose();
    let partitions = number(1, "partitions")?.unwrap_or(0);
    Ok(Request::CreateTopic(CreateTopic {
        topic: utf8(args[0])?.to_string(),
        partitions: u32::try_from(partitions).map_err(|_| {
            ProtoError::BadArg(format!("partitions {partitions} is above {}", u32::MAX))
        })?,
        retention_bytes: number(2, "retention_bytes")?.unwrap_or(0),
        retention_ms: number(3, "retention_ms")?.unwrap_or(0),
    }))
}

/// `SUB <topic> <group> [earliest|latest|committed] [<credit>] [ephemeral]`.
fn parse_sub(args: &[&[u8]]) -> Result<Request, ProtoError> {
    const USAGE: &str = "SUB <topic> <group> [earliest|latest|committed] [<credit>] [ephemeral]";
    if args.len() < 2 || args.len() > 5 {
        return Err(usage(USAGE));
    }
    let mut start = StartPosition::Committed;
    let mut credit = SUB_CREDIT_DEFAULT;
    let mut rest = &args[2..];
    // The kind word comes last, so that every line valid before it existed keeps its meaning.
    let mut kind = GroupKind::Durable;
    if let Some((last, before)) = rest.split_last() {
        if last.eq_ignore_ascii_case(GroupKind::Ephemeral.word().as_bytes()) {
            kind = GroupKind::Ephemeral;
            rest = before;
        }
    }
    if let Some(word) = rest.first() {
        let position = [StartPosition::Committed, StartPosition::Earliest, StartPosition::Latest]
            .into_iter()
            .find(|p| word.eq_ignore_ascii_case(p.word().as_bytes()));
        if let Some(p) = position {
            start = p;
            rest = &rest[1..];
        }
    }
    match rest {
        [] => {}
        [word] => credit = parse_u32(word, "credit")?,
        _ => return Err(usage(USAGE)),
    }
    Ok(Request::Subscribe {
        topic: utf8(args[0])?.to_string(),
        group: utf8(args[1])?.to_string(),
        start,
        credit,
        kind,
    })
}

/// `<partition> <offset>[-<last_offset>]`.
fn parse_range(partition: &[u8], offsets: &[u8]) -> Result<OffsetRange, ProtoError> {
    let partition = parse_u32(partition, "partition")?;
    let (first, last) = match offsets.iter().position(|&b| b == b'-') {
        Some(dash) => (
            parse_u64(&offsets[..dash], "offset")?,
            parse_u64(&offsets[dash + 1..], "last offset")?,
        ),
        None => {
            let offset = parse_u64(offsets, "offset")?;
            (offset, offset)
        }
    };
    Ok(OffsetRange { partition, first, last })
}

/// Appends the canonical text form of `request`: upper-case verb, one space between
/// arguments, every optional argument written out, `\r\n` line ends. A request with several
/// records or ranges becomes several lines, one per record or range.
pub fn encode_request(request: &Request, out: &mut BytesMut) {
    let mut line = |text: String| {
        out.put_slice(text.as_bytes());
        out.put_slice(b"\r\n");
    };
    match request {
        Request::Ping => line("PING".into()),
        Request::Info => line("INFO".into()),
        Request::Health => line("HEALTH".into()),
        Request::Stats => line("STATS".into()),
        Request::Topics => line("TOPICS".into()),
        Request::Groups => line("GROUPS".into()),
        Request::Auth { token } => line(format!("AUTH {token}")),
        Request::CreateTopic(c) => line(format!(
            "CREATE {} {} {} {}",
            c.topic, c.partitions, c.retention_bytes, c.retention_ms
        )),
        Request::Subscribe { topic, group, start, credit, kind: GroupKind::Durable } => {
            line(format!("SUB {topic} {group} {} {credit}", start.word()))
        }
        Request::Subscribe { topic, group, start, credit, kind: GroupKind::Ephemeral } => {
            line(format!("SUB {topic} {group} {} {credit} ephemeral", start.word()))
        }
        Request::Unsubscribe { topic, group } => line(format!("UNSUB {topic} {group}")),
        Request::DeleteGroup { topic, group } => line(format!("DELGROUP {topic} {group}")),
        Request::Credit { topic, group, credit } => {
            line(format!("CREDIT {topic} {group} {credit}"))
        }
        Request::Ack { topic, group, ranges } => {
            ranges.iter().for_each(|r| line(format!("ACK {topic} {group} {}", range_words(r))))
        }
        Request::Nack { topic, group, delay_ms, ranges } => ranges
            .iter()
            .for_each(|r| line(format!("NACK {topic} {group} {} {delay_ms}", range_words(r)))),
        Request::Reject { topic, group, ranges } => {
            ranges.iter().for_each(|r| line(format!("REJECT {topic} {group} {}", range_words(r))))
        }
        Request::Publish { topic, records } => {
            for record in records {
                let key = record.key.as_deref().map(|k| format!(" {}", String::from_utf8_lossy(k)));
                out.put_slice(
                    format!("PUB {topic}{} {}\r\n", key.unwrap_or_default(), record.value.len())
                        .as_bytes(),
                );
                out.put_slice(&record.value);
                out.put_slice(b"\r\n");
            }
        }
    }
}

fn range_words(r: &OffsetRange) -> String {
    if r.first == r.last {
        format!("{} {}", r.partition, r.first)
    } else {
        format!("{} {}-{}", r.partition, r.first, r.last)
    }
}

/// Appends `response` as text-dialect lines.
///
/// | response        | text                                                         |
/// |-----------------|--------------------------------------------------------------|
/// | `PONG`          | `+PONG`                                                      |
/// | `OK`            | `+OK`                                                        |
/// | `PUBLISHED`     | `+OK <partition> <offset>` (more pairs for more records)     |
/// | `SUBSCRIBED`    | `+OK <partitions>`                                           |
/// | admin replies   | `+OK <json>`                                                 |
/// | `DELIVER`       | per record `MSG <topic> <partition> <offset> <attempt> [<key>] <nbytes>`, payload line |
/// | `ERROR`         | `-ERR <CODE> <message>`                                      |
pub fn encode_response(response: &Response, out: &mut BytesMut) {
    match response {
        Response::Pong => out.put_slice(b"+PONG\r\n"),
        Response::Ok => out.put_slice(b"+OK\r\n"),
        Response::Info(json)
        | Response::Health(json)
        | Response::Stats(json)
        | Response::Topics(json)
        | Response::Groups(json) => {
            out.put_slice(b"+OK ");
            out.extend(json.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
            out.put_slice(b"\r\n");
        }
        Response::Published(placements) => {
            out.put_slice(b"+OK");
            for p in placements {
                out.put_slice(format!(" {} {}", p.partition, p.offset).as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        Response::Subscribed { partitions } => {
            out.put_slice(format!("+OK {partitions}\r\n").as_bytes())
        }
        Response::Deliver(deliver) => {
            for d in &deliver.records {
                encode_msg(&deliver.topic, d, out);
            }
        }
        Response::Error { code, message } => {
            let message: String =
                message.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
            out.put_slice(format!("-ERR {} {}\r\n", code.name(), message).as_bytes());
        }
    }
}

/// Appends one `MSG` push and its payload line.
pub fn encode_msg(topic: &str, d: &Delivery, out: &mut BytesMut) {
    let key = d.key.as_deref().map(|k| format!(" {}", String::from_utf8_lossy(k)));
    let line = format!(
        "MSG {topic} {} {} {}{} {}\r\n",
        d.partition,
        d.offset,
        d.attempt,
        key.unwrap_or_default(),
        d.value.len()
    );
    out.put_slice(line.as_bytes());
    out.put_slice(&d.value);
    out.put_slice(b"\r\n");
}

/// One line (or `MSG` with payload) the broker sends in the text dialect, as a client or a
/// test reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextReply {
    /// `+PONG`.
    Pong,
    /// `+OK` and whatever follows it on the line (empty for a bare `+OK`).
    Ok(String),
    /// `-ERR <CODE> <message>`.
    Err {
        /// The code, looked up by name (`ErrorCode(0)` if the name is unknown).
        code: ErrorCode,
        /// The message after the code.
        message: String,
    },
    /// `MSG` push with its payload.
    Msg {
        /// Topic.
        topic: String,
        /// The delivery; `timestamp_ms` is 0 (the text dialect does not carry it).
        delivery: Delivery,
    },
}

/// Decodes one reply line (and payload, for `MSG`) from the start of `buf`.
///
/// # Errors
/// [`ProtoError::Parse`] for a line that is no reply, [`ProtoError::LineTooLong`] past the limit.
pub fn decode_reply(buf: &mut BytesMut, limits: &Limits) -> Result<Option<TextReply>, ProtoError> {
    let Some(line_end) = find_line_end(
        buf,
        limits.line_bytes_max.max(crate::limits::FRAME_BODY_BYTES_MAX_CEILING as usize),
    )?
    else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(trim_cr(&buf[..line_end])).into_owned();
    if let Some(rest) = line.strip_prefix("MSG ") {
        return decode_msg(buf, line_end, rest);
    }
    let reply = if line == "+PONG" {
        TextReply::Pong
    } else if let Some(rest) = line.strip_prefix("+OK") {
        TextReply::Ok(rest.trim_start().to_string())
    } else if let Some(rest) = line.strip_prefix("-ERR ") {
        let (name, message) = rest.split_once(' ').unwrap_or((rest, ""));
        TextReply::Err {
            code: ErrorCode::from_name(name).unwrap_or(ErrorCode(0)),
            message: message.to_string(),
        }
    } else {
        return Err(ProtoError::Parse(format!("not a reply line: {:?}", truncate_utf8(&line, 64))));
    };
    let _ = buf.split_to(line_end + 1);
    Ok(Some(reply))
}

fn decode_msg(
    buf: &mut BytesMut,
    line_end: usize,
    rest: &str,
) -> Result<Option<TextReply>, ProtoError> {
    let words: Vec<&str> = rest.split(' ').collect();
    let bad = || ProtoError::Parse(format!("bad MSG line: MSG {}", truncate_utf8(rest, 64)));
    let (topic, key) = match words.len() {
        5 => (words[0], None),
        6 => (words[0], Some(Bytes::copy_from_slice(words[4].as_bytes()))),
        _ => return Err(bad()),
    };
    let num = |i: usize| words[i].parse::<u64>().map_err(|_| bad());
    let nbytes = num(words.len() - 1)?;
    // No broker sends a payload above the ceiling; a larger length is a broken line, and
    // trusting it would overflow the offsets below.
    if nbytes > u64::from(crate::limits::FRAME_BODY_BYTES_MAX_CEILING) {
        return Err(bad());
    }
    let nbytes = nbytes as usize;
    let payload_at = line_end + 1;
    if buf.len() < payload_at + nbytes + 2 {
        return Ok(None);
    }
    if &buf[payload_at + nbytes..payload_at + nbytes + 2] != b"\r\n" {
        return Err(bad());
    }
    let delivery = Delivery {
        partition: u32::try_from(num(1)?).map_err(|_| bad())?,
        offset: num(2)?,
        attempt: u32::try_from(num(3)?).map_err(|_| bad())?,
        timestamp_ms: 0,
        key,
        value: Bytes::copy_from_slice(&buf[payload_at..payload_at + nbytes]),
    };
    let topic = topic.to_string();
    let _ = buf.split_to(payload_at + nbytes + 2);
    Ok(Some(TextReply::Msg { topic, delivery }))
}
