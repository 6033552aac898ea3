//! The result of a bench run: rates, latency percentiles, duplicates and missing records,
//! printed for people and as one JSON object.

use std::time::Instant;

use hdrhistogram::Histogram;
use mq_client::protocol::admin::InfoReply;
use mq_tools::{human_count, human_rate};
use serde_json::json;

use crate::publisher::Published;
use crate::subscriber::{new_histogram, Received, Seen};
use crate::Args;

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Records the broker placed (over all publishers).
    pub records: u64,
    /// Records that got an error outcome.
    pub failed: u64,
    /// Seconds from the start until the last publisher had every reply.
    pub publish_seconds: f64,
    /// Seconds from the start until the last group had every record; `None` without
    /// subscribers.
    pub e2e_seconds: Option<f64>,
    /// End-to-end latency of first deliveries, in microseconds.
    pub latency_us: Histogram<u64>,
    /// In paced mode, how late records left their publisher, in microseconds.
    pub late_us: Histogram<u64>,
    /// Records received more than once within a group.
    pub duplicates: u64,
    /// Records placed but never received, summed over groups.
    pub missing: u64,
    /// Records on the topic without a bench header.
    pub foreign: u64,
    /// The broker's storage and fsync mode.
    pub storage: String,
    /// The broker's fsync mode.
    pub fsync: String,
}

impl Report {
    /// Sums up the threads' results.
    pub fn new(
        args: &Args,
        info: &InfoReply,
        start: Instant,
        published: &[Published],
        received: Vec<Received>,
        groups: usize,
    ) -> Report {
        let records: u64 = published.iter().map(|p| p.placed).sum();
        let failed = published.iter().map(|p| p.failed).sum();
        let publish_end = published.iter().filter_map(|p| p.finished).max().unwrap_or(start);
        let mut latency_us = new_histogram();
        let mut late_us = new_histogram();
        for p in published {
            late_us.add(&p.late_us).expect("same histogram bounds");
        }
        let (mut duplicates, mut foreign, mut missing) = (0, 0, 0);
        let mut e2e_end = None;
        for group in 0..groups {
            let members: Vec<&Received> = received.iter().filter(|r| r.group == group).collect();
            let mut seen = vec![Seen::default(); args.publishers as usize];
            let mut unique = 0;
            for r in &members {
                latency_us.add(&r.latency_us).expect("same histogram bounds");
                duplicates += r.duplicates;
                foreign += r.foreign;
                unique += r.unique;
                for (all, mine) in seen.iter_mut().zip(&r.seen) {
                    let both = all.merge(mine);
                    duplicates += both; // received by two members of the group
                    unique -= both;
                }
            }
            missing += records.saturating_sub(unique);
            let last = members.iter().filter_map(|r| r.last).max();
            e2e_end = e2e_end.max(last);
        }
        Report {
            records,
            failed,
            publish_seconds: publish_end.duration_since(start).as_secs_f64(),
            e2e_seconds: (groups > 0)
                .then(|| e2e_end.unwrap_or(start).duration_since(start).as_secs_f64()),
            latency_us,
            late_us,
            duplicates,
            missing,
            foreign,
            storage: info.storage.clone(),
            fsync: info.fsync.clone(),
        }
    }

    fn per_s(&self, seconds: Option<f64>) -> Option<f64> {
        seconds.filter(|s| *s > 0.0).map(|s| self.records as f64 / s)
    }

    /// Prints the summary (stdout, or stderr with `--json`) and the JSON line.
    pub fn print(&self, args: &Args) {
        let summary = self.summary(args);
        if args.json {
            eprint!("{summary}");
            println!("{}", self.json(args));
        } else {
            print!("{summary}");
        }
    }

    fn summary(&self, args: &Args) -> String {
        let mb = |r: Option<f64>| {
            r.map_or("-".into(), |r| format!("{:.1} MB/s", r * args.size as f64 / 1e6))
        };
        let publish = self.per_s(Some(self.publish_seconds));
        let e2e = self.per_s(self.e2e_seconds);
        let groups = if args.subscribers_share { 1 } else { args.subscribers };
        let mut out = format!(
            "mq-bench: {} publisher(s), {} subscriber(s) in {} group(s), {} records of {} bytes, \
             batch {} / linger {} µs, credit {}{}; broker storage {}, fsync {}\n",
            args.publishers,
            args.subscribers,
            groups,
            human_count(self.records),
            args.size,
            args.batch,
            args.linger_us,
            args.credit,
            args.rate
                .map(|r| format!(", rate {} per publisher", human_rate(Some(r))))
                .unwrap_or_default(),
            self.storage,
            self.fsync,
        );
        out += &format!(
            "publish:    {:>7.3} s  {:>14}  {}\n",
            self.publish_seconds,
            human_rate(publish),
            mb(publish)
        );
        if let Some(seconds) = self.e2e_seconds {
            out += &format!("end to end: {seconds:>7.3} s  {:>14}  {}\n", human_rate(e2e), mb(e2e));
            let h = &self.latency_us;
            out += &format!(
                "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0})\n",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.mean()
            );
        }
        if !self.late_us.is_empty() {
            let h = &self.late_us;
            out += &format!(
                "sender late µs: p50 {}  p99 {}  p99.9 {}  max {}  (part of the latency above)\n",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
        }
        out += &format!(
            "duplicates {}, missing {}, failed {}, foreign {}\n",
            self.duplicates, self.missing, self.failed, self.foreign
        );
        out
    }

    fn json(&self, args: &Args) -> serde_json::Value {
        let publish = self.per_s(Some(self.publish_seconds));
        let e2e = self.per_s(self.e2e_seconds);
        let mb = |r: Option<f64>| r.map(|r| r * args.size as f64 / 1e6);
        let h = &self.latency_us;
        let latency = self.e2e_seconds.map(|_| {
            json!({
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean(),
            })
        });
        let late = &self.late_us;
        let sender_late = (!late.is_empty()).then(|| {
            json!({
                "p50": late.value_at_quantile(0.5),
                "p99": late.value_at_quantile(0.99),
                "p999": late.value_at_quantile(0.999),
                "max": late.max(),
            })
        });
        json!({
            "records": self.records,
            "size": args.size,
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "subscribers_share": args.subscribers_share,
            "batch": args.batch,
            "linger_us": args.linger_us,
            "credit": args.credit,
            "rate": args.rate,
            "publish_seconds": self.publish_seconds,
            "publish_records_per_s": publish,
            "publish_mb_per_s": mb(publish),
            "e2e_seconds": self.e2e_seconds,
            "e2e_records_per_s": e2e,
            "e2e_mb_per_s": mb(e2e),
            "latency_us": latency,
            "sender_late_us": sender_late,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "failed": self.failed,
            "broker_storage": self.storage,
            "broker_fsync": self.fsync,
        })
    }
}
