//! A producer or consumer process for the broker's chaos test (`broker/tests/chaos.rs`,
//! RELIABILITY case D9). It runs until it is killed and logs what it did to a file, one line
//! per record, appended and flushed after every batch, so that a SIGKILL loses at most an
//! unterminated last line.
//!
//! ```text
//! chaos_client producer <broker> <topic> <first-id> <log>
//! chaos_client consumer <broker> <topic> <group> <log>
//! ```
//!
//! A producer publishes records with the ids `first-id`, `first-id + 1`, ... in batches. Before
//! a batch is handed to the client library it logs `S <first> <last>` (these ids may reach the
//! broker from now on); for every record the broker acknowledged (`PUBLISHED`) it logs
//! `A <id>`. A consumer logs `R <id> <partition> <offset> <attempt>` for every record it
//! receives, before it acknowledges it, and `BAD <partition> <offset> <value>` for a value
//! that is not what the producer of its id sent.
//!
//! Both reconnect without a time bound (the broker is killed and restarted under them); a
//! consumer that the library gives up on subscribes again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::time::Duration;

use mq_client::{
    BackoffConfig, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartPosition,
};

/// Records per producer batch.
const BATCH: u64 = 64;
/// Pause between two producer batches: keeps the record count (and the drain) modest.
const PAUSE: Duration = Duration::from_millis(10);

/// The value a producer sends for `id`: the id, a check word and a filler whose length and
/// letter depend on the id, so that a consumer can tell a damaged or misattributed value.
fn value_of(id: u64) -> String {
    let mut x = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let letter = (b'a' + (id % 26) as u8) as char;
    let filler: String = std::iter::repeat_n(letter, (id % 97) as usize).collect();
    format!("{id}:{x:016x}:{filler}")
}

fn client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(500),
            attempts_max: None,
            elapsed_max: None,
        },
        ..ClientConfig::default()
    }
}

fn open_log(path: &str) -> BufWriter<File> {
    let file = OpenOptions::new().create(true).append(true).open(path).expect("open the log");
    BufWriter::with_capacity(1 << 16, file)
}

fn produce(broker: &str, topic: &str, first: u64, log_path: &str) -> ! {
    let mut log = open_log(log_path);
    let config = ProducerConfig { batch_records: 32, ..ProducerConfig::default() };
    let mut producer = loop {
        match Producer::connect(&[broker], client_config(), config.clone()) {
            Ok(p) => break p,
            Err(e) => {
                eprintln!("producer: connect: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // Sequence numbers whose outcome has not come back yet, and their ids.
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut next = first;
    loop {
        let ids = next..next + BATCH;
        next += BATCH;
        writeln!(log, "S {} {}", ids.start, ids.end - 1).unwrap();
        log.flush().unwrap();
        for id in ids {
            let key = format!("k{}", id % 64);
            match producer.send(topic, Some(key.as_bytes()), value_of(id).as_bytes()) {
                Ok(seq) => {
                    pending.insert(seq, id);
                }
                Err(e) => {
                    eprintln!("producer: send of {id}: {e}");
                    break;
                }
            }
        }
        match producer.flush() {
            Ok(outcomes) => {
                for outcome in outcomes {
                    let id = pending.remove(&outcome.seq);
                    match (id, outcome.result) {
                        (Some(id), Ok(_)) => writeln!(log, "A {id}").unwrap(),
                        (Some(id), Err(e)) => eprintln!("producer: record {id} failed: {e}"),
                        (None, _) => eprintln!("producer: outcome of unknown seq {}", outcome.seq),
                    }
                }
                log.flush().unwrap();
            }
            // The failed records' outcomes come with the next flush.
            Err(e) => eprintln!("producer: flush: {e}"),
        }
        std::thread::sleep(PAUSE);
    }
}

fn consume(broker: &str, topic: &str, group: &str, log_path: &str) -> ! {
    let mut log = open_log(log_path);
    let config =
        ConsumerConfig { start: StartPosition::Earliest, credit: 256, ..ConsumerConfig::default() };
    loop {
        let mut consumer =
            match Consumer::subscribe(&[broker], topic, group, client_config(), config.clone()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("consumer: subscribe: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
        loop {
            let messages = match consumer.poll(Duration::from_millis(500)) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consumer: poll: {e}; subscribing again");
                    break;
                }
            };
            for m in &messages {
                let value = String::from_utf8_lossy(&m.value);
                let id = value.split(':').next().and_then(|id| id.parse::<u64>().ok());
                match id {
                    Some(id) if value == value_of(id) => {
                        writeln!(log, "R {id} {} {} {}", m.partition, m.offset, m.attempt)
                    }
                    _ => writeln!(log, "BAD {} {} {value:?}", m.partition, m.offset),
                }
                .unwrap();
            }
            log.flush().unwrap();
            if let Err(e) = consumer.ack_many(&messages) {
                eprintln!("consumer: ack: {e}; subscribing again");
                break;
            }
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["producer", broker, topic, first, log] => {
            produce(broker, topic, first.parse().expect("first id"), log)
        }
        ["consumer", broker, topic, group, log] => consume(broker, topic, group, log),
        _ => {
            eprintln!(
                "usage: chaos_client producer <broker> <topic> <first-id> <log>\n       \
                 chaos_client consumer <broker> <topic> <group> <log>"
            );
            std::process::exit(2);
        }
    }
}
