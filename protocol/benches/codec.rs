//! Criterion benchmarks of the wire codec: one 64-record batch per iteration.
//!
//! Every group reports `Throughput::Elements(64)`, so criterion prints records per second; the
//! numbers, the command and the machine are in `BENCHMARKS.md` at the repository root.
//!
//! The workload is what a GPU telemetry streamer sends: topic `telemetry`, a 40-byte key shaped
//! like an NVIDIA GPU UUID (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) and a 200-byte payload
//! per record.
//!
//! Decode benchmarks build the read buffer with `BytesMut::from(&frame[..])` in the setup of
//! `iter_batched`, outside the measurement, and return what they decoded so that freeing it is
//! outside too (`decode_request_incl_drop` puts the free back in). They use
//! `BatchSize::PerIteration`: the frame is copied just before it is decoded, so it is hot in
//! cache as it is right after a socket read, at the price of one timer read per iteration
//! (`timer_overhead`, about 25 ns per batch). `decode_request_small_input` is the same decode
//! with `BatchSize::SmallInput`, which builds hundreds of frames before each sample and frees
//! the outputs after it, so it also measures cache misses on cold frames and page faults of a
//! growing heap. `reused_buffer_copy_decode_drop` is the broker's loop with one reused read
//! buffer; `reused_buffer_copy_only` is its copy alone, to subtract.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use mq_protocol::{
    decode_request, decode_response, text, Decoded, Deliver, DeliverWriter, Delivery, Dialect,
    Limits, Record, Request, Response, ServerCodec,
};

const RECORDS: usize = 64;
const PAYLOAD_BYTES: usize = 200;
const TOPIC: &str = "telemetry";

/// A 40-byte key shaped like `GPU-5fd4f087-86f3-7a43-b711-4771313afc50`, distinct per `i`.
fn gpu_uuid(i: usize) -> Bytes {
    // A fixed-seed LCG, so that keys look random but every run encodes the same bytes.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut hex = String::with_capacity(32);
    while hex.len() < 32 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        hex.push_str(&format!("{:08x}", (x >> 32) as u32));
    }
    let key = format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    assert_eq!(key.len(), 40);
    Bytes::from(key)
}

/// A 200-byte payload of printable bytes (a JSON-ish telemetry sample would be similar).
fn payload(i: usize) -> Bytes {
    let sample = format!(
        "{{\"gpu\":{i},\"ts\":1700000000{i:03},\"util\":87,\"mem_used\":40960,\"temp_c\":64,\"power_w\":312.5}}"
    );
    let mut bytes = sample.into_bytes();
    bytes.resize(PAYLOAD_BYTES, b' ');
    Bytes::from(bytes)
}

fn records() -> Vec<Record> {
    (0..RECORDS).map(|i| Record { key: Some(gpu_uuid(i)), value: payload(i) }).collect()
}

fn publish() -> Request {
    Request::Publish { topic: TOPIC.to_string(), records: records() }
}

fn deliveries() -> Vec<Delivery> {
    records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| Delivery {
            partition: (i % 8) as u32,
            offset: 1_000_000 + i as u64,
            attempt: 1,
            timestamp_ms: 1_700_000_000_000 + i as u64,
            key: r.key,
            value: r.value,
        })
        .collect()
}

/// The PUBLISH batch as one binary frame.
fn publish_frame() -> Bytes {
    let mut out = BytesMut::new();
    publish().encode(7, u32::MAX, &mut out).expect("encode");
    out.freeze()
}

/// The same records as 64 text-dialect `PUB telemetry <key> 200` lines with payloads.
fn publish_text() -> Bytes {
    let mut out = BytesMut::new();
    text::encode_request(&publish(), &mut out);
    out.freeze()
}

fn deliver_frame(deliveries: &[Delivery]) -> Bytes {
    let mut out = BytesMut::new();
    let mut w = DeliverWriter::begin(&mut out, TOPIC);
    for d in deliveries {
        w.push(&mut out, d);
    }
    w.finish(&mut out);
    out.freeze()
}

fn expect_publish(decoded: &Decoded<Request>) {
    match &decoded.result {
        Ok(Request::Publish { records, .. }) => assert_eq!(records.len(), RECORDS),
        other => panic!("expected a PUBLISH of {RECORDS} records, got {other:?}"),
    }
}

/// Checks once, outside any measurement, that every decoder sees the whole batch.
fn sanity_check(limits: &Limits) {
    let frame = publish_frame();
    let mut buf = BytesMut::from(&frame[..]);
    let decoded = decode_request(&mut buf, limits).expect("framing").expect("complete");
    assert_eq!(decoded.result.as_ref().ok(), Some(&publish()));
    assert!(buf.is_empty());

    let mut codec = ServerCodec::new(*limits);
    let mut buf = BytesMut::from(&frame[..]);
    expect_publish(&codec.decode(&mut buf).expect("framing").expect("complete"));
    assert_eq!(codec.dialect(), Some(Dialect::Binary));

    let deliveries = deliveries();
    let mut buf = BytesMut::from(&deliver_frame(&deliveries)[..]);
    let decoded = decode_response(&mut buf, limits).expect("framing").expect("complete");
    assert_eq!(
        decoded.result,
        Ok(Response::Deliver(Deliver { topic: TOPIC.into(), records: deliveries }))
    );

    let lines = publish_text();
    assert!(lines.starts_with(b"PUB telemetry GPU-"));
    let mut buf = BytesMut::from(&lines[..]);
    let mut n = 0;
    while let Some(decoded) = text::decode_request(&mut buf, limits).expect("framing") {
        match decoded.result {
            Ok(Request::Publish { records, .. }) => {
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].value.len(), PAYLOAD_BYTES);
            }
            other => panic!("expected a one-record PUB, got {other:?}"),
        }
        n += 1;
    }
    assert_eq!(n, RECORDS);
}

/// Decodes one frame per iteration from a fresh copy of `frame`, made outside the measurement
/// just before the iteration (so the bytes are hot in cache, as right after a socket read).
/// `BatchSize::PerIteration` adds one timer read per iteration; `timer_overhead` measures it.
fn decode_bench<T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    frame: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> T,
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || BytesMut::from(frame),
            |mut buf| {
                let decoded = decode(&mut buf);
                (buf, decoded)
            },
            BatchSize::PerIteration,
        )
    });
}

fn bench_publish(c: &mut Criterion) {
    let limits = Limits::default();
    sanity_check(&limits);
    let request = publish();
    let frame = publish_frame();

    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(RECORDS as u64));

    let mut out = BytesMut::with_capacity(frame.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&request).encode(7, limits.frame_body_bytes_max, &mut out).unwrap();
            black_box(out.len())
        })
    });

    // Decoded request returned: freeing it is outside the measurement.
    decode_bench(&mut g, "decode_request", &frame, |buf| decode_request(buf, &limits));
    // Decoded request dropped inside the measurement, as the broker drops it once handled.
    decode_bench(&mut g, "decode_request_incl_drop", &frame, |buf| {
        drop(black_box(decode_request(buf, &limits)));
    });

    // Latch the binary dialect first, as a connection's first frame would.
    let mut codec = ServerCodec::new(limits);
    codec.decode(&mut BytesMut::from(&frame[..])).unwrap().unwrap();
    assert_eq!(codec.dialect(), Some(Dialect::Binary));
    decode_bench(&mut g, "server_codec_decode", &frame, |buf| codec.decode(buf));

    // The same decode with `BatchSize::SmallInput`: each sample's inputs are all built before
    // it (hundreds of 16 KB frames, more than L2 holds) and its outputs freed after it, so this
    // one also measures cache misses on cold frames and heap growth. Kept for comparison.
    g.bench_function("decode_request_small_input", |b| {
        b.iter_batched(
            || BytesMut::from(&frame[..]),
            |mut buf| {
                let decoded = decode_request(&mut buf, &limits);
                (buf, decoded)
            },
            BatchSize::SmallInput,
        )
    });

    // The broker's steady state: one reused read buffer, the frame copied in (as `read` would),
    // decoded, and dropped; the buffer's storage is reclaimed by the next copy.
    let mut buf = BytesMut::with_capacity(frame.len());
    g.bench_function("reused_buffer_copy_decode_drop", |b| {
        b.iter(|| {
            buf.extend_from_slice(black_box(&frame[..]));
            drop(black_box(decode_request(&mut buf, &limits).unwrap().unwrap()));
        })
    });
    let mut buf = BytesMut::with_capacity(frame.len());
    g.bench_function("reused_buffer_copy_only", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&frame[..]));
            black_box(buf.len())
        })
    });

    // What `decode_bench` pays per iteration besides the decode: one timer read.
    g.bench_function("timer_overhead", |b| {
        b.iter_batched(|| BytesMut::from(&frame[..]), |buf| buf, BatchSize::PerIteration)
    });
    g.finish();
}

fn bench_deliver(c: &mut Criterion) {
    let limits = Limits::default();
    let deliveries = deliveries();
    let frame = deliver_frame(&deliveries);

    let mut g = c.benchmark_group("deliver");
    g.throughput(Throughput::Elements(RECORDS as u64));

    let mut out = BytesMut::with_capacity(frame.len());
    g.bench_function("deliver_writer_encode", |b| {
        b.iter(|| {
            out.clear();
            let mut w = DeliverWriter::begin(&mut out, TOPIC);
            for d in black_box(&deliveries) {
                w.push(&mut out, d);
            }
            w.finish(&mut out);
            black_box(out.len())
        })
    });

    decode_bench(&mut g, "decode_response", &frame, |buf| decode_response(buf, &limits));
    g.finish();
}

fn bench_text(c: &mut Criterion) {
    let limits = Limits::default();
    let lines = publish_text();

    let mut g = c.benchmark_group("text");
    g.throughput(Throughput::Elements(RECORDS as u64));
    decode_bench(&mut g, "decode_64_pub_lines", &lines, |buf| {
        let mut decoded = Vec::with_capacity(RECORDS);
        while let Some(d) = text::decode_request(buf, &limits).unwrap() {
            decoded.push(d);
        }
        decoded
    });
    g.finish();
}

criterion_group!(benches, bench_publish, bench_deliver, bench_text);
criterion_main!(benches);
