//! Property tests: hostile input never panics the decoder or makes it allocate by a declared
//! length, and every valid value survives both dialects unchanged.
//!
//! A counting global allocator records the largest single allocation made while a test
//! measures, so "a length field cannot make us reserve memory" is checked, not assumed.
//!
//! The hostile-input properties run 2,000 cases each in `cargo test`; a long run (the
//! reliability plan asks for at least a million inputs) sets `MQ_FUZZ_CASES`:
//!
//! ```sh
//! MQ_FUZZ_CASES=1000000 cargo test --release -p mq-protocol --test proptest
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::mem::size_of;

use bytes::{Bytes, BytesMut};
use mq_protocol::limits::{FRAME_HEADER_BYTES, PUBLISH_RECORD_BYTES_MIN};
use mq_protocol::text;
use mq_protocol::{
    CreateTopic, Deliver, Delivery, ErrorCode, GroupKind, Limits, OffsetRange, Opcode, Placement,
    Record, Request, Response, ServerCodec, StartPosition, MAGIC, VERSION,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// Wraps the system allocator and, on threads that are measuring, remembers the largest
/// single allocation asked for. Thread-local, not a global atomic: the test harness runs tests
/// on several threads at once, and only the measuring thread's allocations count.
struct CountingAllocator;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(bytes: usize) {
    // `try_with`: allocations during thread teardown find no thread-local, and do not count.
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(bytes)));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns the largest single allocation it made on this thread, in bytes.
fn largest_allocation_during(f: impl FnOnce()) -> usize {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    f();
    MEASURING.with(|measuring| measuring.set(false));
    LARGEST_ALLOCATION_BYTES.with(Cell::get)
}

// ---------------------------------------------------------------------------------------
// Hostile input.

/// Small limits, so that the allocation bound below is tight.
const BODY_BYTES_MAX: u32 = 4096;
const LINE_BYTES_MAX: usize = 512;

fn small_limits() -> Limits {
    Limits { frame_body_bytes_max: BODY_BYTES_MAX, line_bytes_max: LINE_BYTES_MAX }
}

/// The largest allocation decoding may make, whatever the input says about lengths and
/// counts. Two things may outgrow the largest frame, and only in proportion to bytes that
/// actually arrived:
/// - the read buffer: `reserve` for the rest of a frame may double it (`BytesMut` growth);
/// - the decoded record vector of a `PUBLISH`: a body of empty records holds one per
///   `PUBLISH_RECORD_BYTES_MIN` (6) bytes, and each becomes a `Record` (64 bytes on 64-bit
///   targets), so a full body of them decodes into a vector about 10 times its size.
///
/// A length or count taken on trust (4 GiB from `0xFFFFFFFF`) would be far above this.
fn allocation_bytes_bound() -> usize {
    let frame_bytes = FRAME_HEADER_BYTES + BODY_BYTES_MAX as usize;
    let read_buffer_bytes = 2 * frame_bytes;
    let records_bytes = BODY_BYTES_MAX as usize / PUBLISH_RECORD_BYTES_MIN * size_of::<Record>();
    read_buffer_bytes.max(records_bytes)
}

/// Decodes requests from `buf` until the codec wants more bytes or gives up; each value is
/// dropped at once, as the broker hands it on. Every decoded value must consume bytes.
fn drain(codec: &mut ServerCodec, buf: &mut BytesMut) {
    loop {
        let before = buf.len();
        match codec.decode(buf) {
            Ok(Some(_)) => assert!(buf.len() < before, "a value decoded from no bytes"),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Any bytes at all, up to 4 KiB.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=4096)
}

/// A header that passes or nearly passes `check`, with a random length field, then random
/// body bytes (which may be fewer or more than the length says).
fn random_frames() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        proptest::sample::select(Opcode::ALL.iter().map(|op| *op as u8).collect::<Vec<_>>()),
        any::<u8>(),
    ];
    let flags = prop_oneof![4 => Just(0u8), 1 => any::<u8>()];
    let body_len = prop_oneof![0..=700u32, BODY_BYTES_MAX - 8..=BODY_BYTES_MAX + 8, any::<u32>()];
    (opcode, flags, body_len, any::<u32>(), vec(any::<u8>(), 0..=700)).prop_map(
        |(opcode, flags, body_len, request_id, body)| {
            let mut frame = vec![MAGIC, VERSION, opcode, flags];
            frame.extend_from_slice(&body_len.to_be_bytes());
            frame.extend_from_slice(&request_id.to_be_bytes());
            frame.extend_from_slice(&body);
            frame
        },
    )
}

/// A valid binary request with a few bytes overwritten, then cut or extended: well-formed
/// enough to reach deep into the body decoders.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    let edits = vec((any::<prop::sample::Index>(), any::<u8>()), 1..=4);
    (request(), edits, 0..=8usize, vec(any::<u8>(), 0..=8)).prop_map(
        |(request, edits, cut, extra)| {
            let mut frame = BytesMut::new();
            request.encode(7, u32::MAX, &mut frame).expect("encodes");
            let mut frame = frame.to_vec();
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            frame.truncate(frame.len().saturating_sub(cut));
            frame.extend_from_slice(&extra);
            frame
        },
    )
}

/// Text-like input: verbs, names, numbers, dashes, blanks and line ends in any order.
fn text_soup() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        proptest::sample::select(vec![
            "PUB",
            "pub",
            "SUB",
            "ACK",
            "NACK",
            "REJECT",
            "CREATE",
            "CREDIT",
            "AUTH",
            "PING",
            "UNSUB",
            "telemetry",
            "collectors",
            "earliest",
            "GPU-5fd4",
            "0",
            "5",
            "9-3",
            "7-9",
            "99999999",
            "4294967296",
            "-",
            " ",
            "\t",
            "\r",
            "\n",
            "\r\n",
            "..",
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        vec(any::<u8>(), 1..=4),
    ];
    ("[A-Za-z]", vec(word, 0..=80)).prop_map(|(first, words)| {
        let mut input = first.into_bytes();
        words.iter().for_each(|w| input.extend_from_slice(w));
        input
    })
}

fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![random_bytes(), random_frames(), mutated_frames(), text_soup()]
}

/// Cases per hostile-input property: `MQ_FUZZ_CASES`, or `default`.
fn fuzz_cases(default: u32) -> u32 {
    std::env::var("MQ_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases(2000)))]

    /// (a) Whatever arrives, in whatever pieces, the codec answers without panicking.
    #[test]
    fn hostile_input_never_panics_the_decoder(input in hostile_input(), cut in any::<prop::sample::Index>()) {
        for limits in [Limits::default(), small_limits()] {
            let mut codec = ServerCodec::new(limits);
            let mut buf = BytesMut::new();
            let (first, second) = input.split_at(cut.index(input.len() + 1));
            buf.extend_from_slice(first);
            drain(&mut codec, &mut buf);
            buf.extend_from_slice(second);
            drain(&mut codec, &mut buf);
        }
    }

    /// (b) No single allocation while decoding exceeds the bound that bytes actually received
    /// justify, whatever lengths and counts the input declares.
    #[test]
    fn declared_lengths_never_drive_allocation(input in hostile_input()) {
        let mut codec = ServerCodec::new(small_limits());
        let mut buf = BytesMut::with_capacity(FRAME_HEADER_BYTES + BODY_BYTES_MAX as usize);
        buf.extend_from_slice(&input[..input.len().min(buf.capacity())]);
        let largest = largest_allocation_during(|| drain(&mut codec, &mut buf));
        prop_assert!(
            largest <= allocation_bytes_bound(),
            "allocated {largest} bytes at once, bound {}", allocation_bytes_bound()
        );
    }
}

/// Broker-like text: reply markers, numbers up to `u64::MAX`, blanks and line ends, and
/// `MSG` lines of 4 to 6 such words.
fn reply_soup() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        proptest::sample::select(vec![
            "MSG ",
            "+OK",
            "-ERR ",
            "+PONG",
            "NOT_IN_FLIGHT",
            "telemetry",
            "GPU-5fd4",
            "0",
            "1",
            "5",
            "4294967296",
            "67108865",
            "18446744073709551615",
            " ",
            "\r",
            "\n",
            "\r\n",
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        vec(any::<u8>(), 1..=4),
    ];
    let soup = vec(word, 0..=60).prop_map(|words| words.concat());
    let msg_word = proptest::sample::select(vec![
        "telemetry",
        "GPU-5fd4",
        "0",
        "1",
        "5",
        "4294967296",
        "67108865",
        "18446744073709551615",
    ]);
    let msg = (vec(msg_word, 4..=6), vec(any::<u8>(), 0..=16)).prop_map(|(words, tail)| {
        [format!("MSG {}\r\n", words.join(" ")).into_bytes(), tail].concat()
    });
    prop_oneof![soup, msg]
}

/// Decodes replies with `decode` until it wants more bytes or gives up.
fn drain_replies<T>(
    buf: &mut BytesMut,
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, mq_protocol::ProtoError>,
) {
    loop {
        let before = buf.len();
        match decode(buf) {
            Ok(Some(_)) => assert!(buf.len() < before, "a reply decoded from no bytes"),
            Ok(None) | Err(_) => return,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases(1000)))]

    /// (a) The client's decoders, too, survive whatever a broker (or impostor) sends.
    #[test]
    fn hostile_replies_never_panic_the_client_decoders(
        input in prop_oneof![random_bytes(), random_frames(), reply_soup()],
    ) {
        let limits = Limits::default();
        drain_replies(&mut BytesMut::from(&input[..]), |b| mq_protocol::decode_response(b, &limits));
        drain_replies(&mut BytesMut::from(&input[..]), |b| text::decode_reply(b, &limits));
    }
}

/// A `MSG` length no broker can send is refused, not trusted: `u64::MAX` once overflowed the
/// payload offsets.
#[test]
fn a_msg_length_above_the_ceiling_is_refused() {
    use mq_protocol::limits::FRAME_BODY_BYTES_MAX_CEILING;
    for nbytes in [u64::MAX, u64::MAX - 1, u64::from(FRAME_BODY_BYTES_MAX_CEILING) + 1] {
        let mut buf = BytesMut::from(format!("MSG telemetry 0 0 1 {nbytes}\r\n").as_bytes());
        let outcome = text::decode_reply(&mut buf, &Limits::default());
        assert!(
            matches!(outcome, Err(mq_protocol::ProtoError::Parse(_))),
            "length {nbytes}: {outcome:?}"
        );
    }
}

#[test]
fn a_hostile_length_or_count_allocates_nothing_large() {
    let frame_bytes = FRAME_HEADER_BYTES + BODY_BYTES_MAX as usize;
    let mut huge_length = vec![MAGIC, VERSION, Opcode::Publish as u8, 0];
    huge_length.extend_from_slice(&u32::MAX.to_be_bytes());
    huge_length.extend_from_slice(&1u32.to_be_bytes());
    let mut huge_count = BytesMut::new();
    let request = Request::Publish {
        topic: "telemetry".into(),
        records: vec![Record { key: None, value: Bytes::from_static(b"x") }],
    };
    request.encode(1, BODY_BYTES_MAX, &mut huge_count).expect("encodes");
    let count_at = FRAME_HEADER_BYTES + 2 + "telemetry".len();
    huge_count[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    for input in [huge_length, huge_count.to_vec()] {
        let mut codec = ServerCodec::new(small_limits());
        let mut buf = BytesMut::with_capacity(frame_bytes);
        buf.extend_from_slice(&input);
        let largest = largest_allocation_during(|| drain(&mut codec, &mut buf));
        assert!(largest <= frame_bytes, "allocated {largest} bytes for {input:02x?}");
    }
}

/// The worst case the bound allows is real: a full body of empty records decodes into a
/// vector of exactly `count * size_of::<Record>()` bytes, about 10 times the body.
#[test]
fn a_body_of_empty_records_reaches_the_record_vector_bound() {
    let topic = "t";
    let count = (BODY_BYTES_MAX as usize - 2 - topic.len() - 4) / PUBLISH_RECORD_BYTES_MIN;
    let records = vec![Record { key: None, value: Bytes::new() }; count];
    let mut frame = BytesMut::new();
    Request::Publish { topic: topic.into(), records }
        .encode(1, BODY_BYTES_MAX, &mut frame)
        .expect("fits the small limit");
    let mut codec = ServerCodec::new(small_limits());
    let mut decoded = None;
    let largest = largest_allocation_during(|| decoded = codec.decode(&mut frame).expect("frames"));
    let decoded = decoded.expect("complete").result.expect("valid");
    assert!(matches!(decoded, Request::Publish { ref records, .. } if records.len() == count));
    assert_eq!(largest, count * size_of::<Record>());
    assert!(largest <= allocation_bytes_bound());
}

// ---------------------------------------------------------------------------------------
// Valid values.

/// A topic or group name: the safe alphabet, not `.` or `..`.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,20}".prop_filter("`.` and `..` are not names", |s| s != "." && s != "..")
}

/// A key or token: printable ASCII without space.
fn printable(max_bytes: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~]{{1,{max_bytes}}}")).expect("valid regex")
}

fn u32_edgy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]
}

fn u64_edgy() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>()]
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=300).prop_map(Bytes::from)
}

fn record() -> impl Strategy<Value = Record> {
    (option::of(printable(60).prop_map(Bytes::from)), payload())
        .prop_map(|(key, value)| Record { key, value })
}

fn range() -> impl Strategy<Value = OffsetRange> {
    (u32_edgy(), u64_edgy(), u64_edgy()).prop_map(|(partition, a, b)| OffsetRange {
        partition,
        first: a.min(b),
        last: a.max(b),
    })
}

fn start() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Committed),
        Just(StartPosition::Earliest),
        Just(StartPosition::Latest)
    ]
}

fn kind() -> impl Strategy<Value = GroupKind> {
    prop_oneof![Just(GroupKind::Durable), Just(GroupKind::Ephemeral)]
}

fn ranges() -> impl Strategy<Value = Vec<OffsetRange>> {
    prop_oneof![vec(range(), 1..=1), vec(range(), 2..=4)]
}

/// Any valid request; about half of the batches have exactly one record or range.
fn request() -> impl Strategy<Value = Request> {
    let records = prop_oneof![vec(record(), 1..=1), vec(record(), 2..=4)];
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Info),
        Just(Request::Health),
        Just(Request::Stats),
        Just(Request::Topics),
        Just(Request::Groups),
        printable(256).prop_map(|token| Request::Auth { token }),
        (name(), records).prop_map(|(topic, records)| Request::Publish { topic, records }),
        (name(), u32_edgy(), u64_edgy(), u64_edgy()).prop_map(
            |(topic, partitions, retention_bytes, retention_ms)| {
                Request::CreateTopic(CreateTopic {
                    topic,
                    partitions,
                    retention_bytes,
                    retention_ms,
                })
            }
        ),
        (name(), name(), start(), u32_edgy(), kind()).prop_map(
            |(topic, group, start, credit, kind)| {
                Request::Subscribe { topic, group, start, credit, kind }
            }
        ),
        (name(), name()).prop_map(|(topic, group)| Request::Unsubscribe { topic, group }),
        (name(), name()).prop_map(|(topic, group)| Request::DeleteGroup { topic, group }),
        (name(), name(), u32_edgy()).prop_map(|(topic, group, credit)| Request::Credit {
            topic,
            group,
            credit
        }),
        (name(), name(), ranges()).prop_map(|(topic, group, ranges)| Request::Ack {
            topic,
            group,
            ranges
        }),
        (name(), name(), u32_edgy(), ranges()).prop_map(|(topic, group, delay_ms, ranges)| {
            Request::Nack { topic, group, delay_ms, ranges }
        }),
        (name(), name(), ranges()).prop_map(|(topic, group, ranges)| Request::Reject {
            topic,
            group,
            ranges
        }),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (u32_edgy(), u64_edgy(), 1..=u32::MAX, u64_edgy(), option::of(printable(60)), payload())
        .prop_map(|(partition, offset, attempt, timestamp_ms, key, value)| Delivery {
            partition,
            offset,
            attempt,
            timestamp_ms,
            key: key.map(Bytes::from),
            value,
        })
}

/// Any response, with documents and messages as arbitrary text.
fn response() -> impl Strategy<Value = Response> {
    let placement =
        (u32_edgy(), u64_edgy()).prop_map(|(partition, offset)| Placement { partition, offset });
    let document = ".{0,80}".prop_map(Bytes::from);
    prop_oneof![
        Just(Response::Pong),
        Just(Response::Ok),
        document.clone().prop_map(Response::Info),
        document.clone().prop_map(Response::Health),
        document.clone().prop_map(Response::Stats),
        document.clone().prop_map(Response::Topics),
        document.prop_map(Response::Groups),
        vec(placement, 0..=5).prop_map(Response::Published),
        u32_edgy().prop_map(|partitions| Response::Subscribed { partitions }),
        (name(), vec(delivery(), 0..=4))
            .prop_map(|(topic, records)| Response::Deliver(Deliver { topic, records })),
        (any::<u16>(), ".{0,100}")
            .prop_map(|(code, message)| Response::Error { code: ErrorCode(code), message }),
    ]
}

/// Whether `text::encode_request` writes `request` as one line (one request).
fn is_one_text_request(request: &Request) -> bool {
    match request {
        Request::Publish { records, .. } => records.len() == 1,
        Request::Ack { ranges, .. }
        | Request::Nack { ranges, .. }
        | Request::Reject { ranges, .. } => ranges.len() == 1,
        _ => true,
    }
}

/// The one-record or one-range requests a batch is written as in the text dialect.
fn split_batch(request: &Request) -> Vec<Request> {
    match request.clone() {
        Request::Publish { topic, records } => records
            .into_iter()
            .map(|record| Request::Publish { topic: topic.clone(), records: vec![record] })
            .collect(),
        Request::Ack { topic, group, ranges } => ranges
            .into_iter()
            .map(|r| Request::Ack { topic: topic.clone(), group: group.clone(), ranges: vec![r] })
            .collect(),
        Request::Nack { topic, group, delay_ms, ranges } => ranges
            .into_iter()
            .map(|r| Request::Nack {
                topic: topic.clone(),
                group: group.clone(),
                delay_ms,
                ranges: vec![r],
            })
            .collect(),
        Request::Reject { topic, group, ranges } => ranges
            .into_iter()
            .map(|r| Request::Reject {
                topic: topic.clone(),
                group: group.clone(),
                ranges: vec![r],
            })
            .collect(),
        other => vec![other],
    }
}

fn binary_round_trip(request: &Request, request_id: u32) -> Request {
    let mut buf = BytesMut::new();
    request.encode(request_id, u32::MAX, &mut buf).expect("encodes");
    let decoded = mq_protocol::decode_request(&mut buf, &Limits::default())
        .expect("frames")
        .expect("complete");
    assert!(buf.is_empty(), "bytes left over");
    assert_eq!(decoded.request_id, request_id);
    decoded.result.expect("valid")
}

fn text_requests(request: &Request) -> Vec<Request> {
    let mut buf = BytesMut::new();
    text::encode_request(request, &mut buf);
    let mut requests = Vec::new();
    while let Some(decoded) = text::decode_request(&mut buf, &Limits::default()).expect("frames") {
        requests.push(decoded.result.expect("valid"));
    }
    assert!(buf.is_empty(), "text left over: {:?}", buf);
    requests
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// (c) binary: encode then decode is the identity, request id included.
    #[test]
    fn requests_round_trip_through_binary(request in request(), request_id in any::<u32>()) {
        prop_assert!(request.validate().is_ok(), "the strategy made an invalid request");
        prop_assert_eq!(binary_round_trip(&request, request_id), request);
    }

    /// (c) text -> Request -> binary -> Request is the identity for what one text request
    /// carries; a batch becomes one text request per record or range, in order.
    #[test]
    fn requests_round_trip_through_text(request in request()) {
        let from_text = text_requests(&request);
        if is_one_text_request(&request) {
            prop_assert_eq!(&from_text, &vec![request.clone()]);
            prop_assert_eq!(binary_round_trip(&from_text[0], 1), request);
        } else {
            prop_assert_eq!(from_text, split_batch(&request));
        }
    }

    #[test]
    fn responses_round_trip_through_binary(response in response(), request_id in any::<u32>()) {
        let mut buf = BytesMut::new();
        response.encode(request_id, u32::MAX, &mut buf).expect("encodes");
        let frame_bytes = buf.len();
        let decoded = mq_protocol::decode_response(&mut buf, &Limits::default())
            .expect("frames")
            .expect("complete");
        prop_assert!(buf.is_empty(), "bytes left over of {}", frame_bytes);
        prop_assert_eq!(decoded.request_id, request_id);
        prop_assert_eq!(decoded.result.expect("valid"), response);
    }
}

/// The encoder's own frame is what the decoder measures lengths against: a body at exactly
/// the limit passes, one byte more is refused on both sides.
#[test]
fn a_body_at_the_limit_passes_and_one_byte_more_is_refused() {
    let limits = small_limits();
    let header_bytes = 2 + "t".len() + 4 + 2 + 4;
    for (value_bytes, fits) in [
        (BODY_BYTES_MAX as usize - header_bytes, true),
        (BODY_BYTES_MAX as usize - header_bytes + 1, false),
    ] {
        let request = Request::Publish {
            topic: "t".into(),
            records: vec![Record { key: None, value: Bytes::from(vec![b'x'; value_bytes]) }],
        };
        let mut out = BytesMut::new();
        assert_eq!(request.encode(1, BODY_BYTES_MAX, &mut out).is_ok(), fits);
        let mut unlimited = BytesMut::new();
        request.encode(1, u32::MAX, &mut unlimited).expect("encodes");
        let decoded = mq_protocol::decode_request(&mut unlimited, &limits);
        assert_eq!(decoded.is_ok(), fits, "value of {value_bytes} bytes");
    }
}
