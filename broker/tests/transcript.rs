//! Replays the `nc` transcript of `spec/text.md` against a real broker, so the document a
//! person follows by hand cannot drift from what the broker does.
//!
//! In the ```` ```transcript ```` block, `C: ` lines are sent (with `\r\n`), `S: ` lines
//! must arrive exactly, and `S~ ` lines must arrive starting with the given text.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::start_broker;

fn transcript() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/text.md");
    let text = std::fs::read_to_string(path).expect("spec/text.md is readable");
    let start = text.find("```transcript\n").expect("spec/text.md has a transcript block");
    let body = &text[start + "```transcript\n".len()..];
    let end = body.find("\n```").expect("the transcript block ends");
    body[..end].lines().map(str::to_string).collect()
}

#[test]
fn the_spec_transcript_replays_byte_for_byte() {
    let broker = start_broker(|_| {});
    let stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let lines = transcript();
    assert!(lines.len() >= 10, "the transcript has its steps");
    for (n, line) in lines.iter().enumerate() {
        let (tag, content) = line.split_at(3);
        match tag {
            "C: " => writer.write_all(format!("{content}\r\n").as_bytes()).unwrap(),
            "S: " | "S~ " => {
                let mut got = String::new();
                reader
                    .read_line(&mut got)
                    .unwrap_or_else(|e| panic!("line {n}: no reply to wait for {content:?}: {e}"));
                let got = got
                    .strip_suffix("\r\n")
                    .unwrap_or_else(|| panic!("line {n}: reply {got:?} lacks \\r\\n"));
                if tag == "S: " {
                    assert_eq!(got, content, "transcript line {n}");
                } else {
                    assert!(
                        got.starts_with(content),
                        "transcript line {n}: {got:?} does not start with {content:?}"
                    );
                }
            }
            _ => panic!("transcript line {n} has no C:/S:/S~ tag: {line:?}"),
        }
    }
}
