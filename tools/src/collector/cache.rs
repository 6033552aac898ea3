//! The memory cache: the latest samples of each GPU, bounded per GPU and in total.
//!
//! Each GPU has a ring of its latest `samples_per_gpu` samples (in arrival order). Across
//! GPUs the total is bounded by `samples_max`: past it, whole GPUs are evicted, least
//! recently used first (a write or a query uses a GPU). Eviction loses nothing: every
//! sample is in its JSONL file before it enters the cache.
//!
//! A ring answers a query only if it holds *every* sample in the query's range. Each ring
//! keeps `complete_from_ms`: every sample of the GPU with a time at or after it is in the
//! ring. A ring made for a GPU with nothing on disk starts complete from the beginning of
//! time; one made for a GPU that already has a file starts just after the latest time on
//! disk; each sample pushed out of the ring moves the bound past that sample's time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::line::Sample;

/// One GPU's ring.
#[derive(Debug)]
struct Ring {
    samples: VecDeque<Sample>,
    complete_from_ms: i64,
    /// Last use, for LRU order (a key of `Cache::lru`).
    tick: u64,
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// GPUs with a ring.
    pub gpus: usize,
    /// Samples held.
    pub samples: usize,
    /// Samples held at most.
    pub samples_max: usize,
    /// Samples per GPU at most.
    pub samples_per_gpu: usize,
    /// Whole GPUs evicted.
    pub evictions: u64,
}

/// The cache. Not synchronised: the collector keeps it behind a mutex.
#[derive(Debug)]
pub struct Cache {
    rings: HashMap<Arc<str>, Ring>,
    /// tick → GPU, oldest first.
    lru: BTreeMap<u64, Arc<str>>,
    next_tick: u64,
    samples: usize,
    samples_per_gpu: usize,
    samples_max: usize,
    evictions: u64,
}

impl Cache {
    /// An empty cache.
    ///
    /// # Panics
    /// If a bound is 0, or the per-GPU bound exceeds the total.
    pub fn new(samples_per_gpu: usize, samples_max: usize) -> Cache {
        assert!(samples_per_gpu > 0 && samples_max > 0);
        assert!(samples_per_gpu <= samples_max, "one GPU must fit");
        Cache {
            rings: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            samples: 0,
            samples_per_gpu,
            samples_max,
            evictions: 0,
        }
    }

    /// Appends samples of `uuid` that are now durable. `disk_ts_max_ms` is the latest time
    /// the GPU had on disk before these samples (`None` if it had nothing), used if the GPU
    /// has no ring yet.
    pub fn push(&mut self, uuid: &Arc<str>, disk_ts_max_ms: Option<i64>, samples: Vec<Sample>) {
        let tick = self.touch(uuid);
        let per_gpu = self.samples_per_gpu;
        let ring = self.rings.entry(Arc::clone(uuid)).or_insert_with(|| Ring {
            samples: VecDeque::new(),
            complete_from_ms: disk_ts_max_ms.map_or(i64::MIN, |t| t.saturating_add(1)),
            tick,
        });
        let before = ring.samples.len();
        for sample in samples {
            if ring.samples.len() == per_gpu {
                let out = ring.samples.pop_front().expect("full ring");
                ring.complete_from_ms = ring.complete_from_ms.max(out.ts_ms.saturating_add(1));
            }
            ring.samples.push_back(sample);
        }
        self.samples = self.samples + ring.samples.len() - before;
        assert!(ring.samples.len() <= per_gpu);
        self.evict_beyond_bound(uuid);
    }

    /// The samples of `uuid` with times in `start_ms..=end_ms` that `keep` accepts, if the
    /// ring holds every sample of that range; `None` (a miss) otherwise.
    pub fn select(
        &mut self,
        uuid: &str,
        start_ms: i64,
        end_ms: i64,
        mut keep: impl FnMut(&Sample) -> bool,
    ) -> Option<Vec<Sample>> {
        let ring = self.rings.get(uuid)?;
        if start_ms < ring.complete_from_ms {
            return None;
        }
        let key = Arc::clone(self.rings.get_key_value(uuid)?.0);
        let found: Vec<Sample> = ring
            .samples
            .iter()
            .filter(|s| s.ts_ms >= start_ms && s.ts_ms <= end_ms && keep(s))
            .cloned()
            .collect();
        self.touch(&key);
        Some(found)
    }

    /// Drops the ring of `uuid` (its samples are still on disk).
    pub fn forget(&mut self, uuid: &str) {
        if let Some(ring) = self.rings.remove(uuid) {
            self.lru.remove(&ring.tick);
            self.samples -= ring.samples.len();
        }
    }

    /// Counters now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            gpus: self.rings.len(),
            samples: self.samples,
            samples_max: self.samples_max,
            samples_per_gpu: self.samples_per_gpu,
            evictions: self.evictions,
        }
    }

    fn touch(&mut self, uuid: &Arc<str>) -> u64 {
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(ring) = self.rings.get_mut(uuid) {
            self.lru.remove(&ring.tick);
            ring.tick = tick;
        }
        self.lru.insert(tick, Arc::clone(uuid));
        tick
    }

    /// Evicts least recently used GPUs, never `keep`, until the total is within bound.
    fn evict_beyond_bound(&mut self, keep: &str) {
        while self.samples > self.samples_max {
            let victim = self.lru.values().find(|u| &***u != keep).cloned();
            let Some(victim) = victim else { break };
            self.forget(&victim);
            self.evictions += 1;
        }
        assert!(self.samples <= self.samples_max, "one ring exceeds the total bound");
        debug_assert_eq!(self.lru.len(), self.rings.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts_ms: i64) -> Sample {
        Sample {
            ts_ms,
            value: 1.0,
            offset: ts_ms as u64,
            partition: 0,
            metric: Arc::from("M"),
            extra: None,
        }
    }

    fn all(cache: &mut Cache, uuid: &str, start: i64) -> Option<Vec<i64>> {
        cache.select(uuid, start, i64::MAX, |_| true).map(|v| v.iter().map(|s| s.ts_ms).collect())
    }

    #[test]
    fn a_ring_answers_only_ranges_it_holds_whole() {
        let mut cache = Cache::new(3, 100);
        let gpu: Arc<str> = Arc::from("g");
        cache.push(&gpu, None, (0..5).map(sample).collect());
        assert_eq!(all(&mut cache, "g", 3), Some(vec![3, 4]));
        assert_eq!(all(&mut cache, "g", 2), Some(vec![2, 3, 4]));
        assert_eq!(all(&mut cache, "g", 1), None, "sample 1 was pushed out");
        assert_eq!(all(&mut cache, "other", 0), None);

        let old: Arc<str> = Arc::from("old");
        cache.push(&old, Some(50), vec![sample(60)]);
        assert_eq!(all(&mut cache, "old", 50), None, "time 50 is on disk only");
        assert_eq!(all(&mut cache, "old", 51), Some(vec![60]));
    }

    #[test]
    fn whole_gpus_are_evicted_least_recently_used_first() {
        let mut cache = Cache::new(4, 8);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("a"), Arc::from("b"), Arc::from("c"));
        cache.push(&a, None, (0..4).map(sample).collect());
        cache.push(&b, None, (0..4).map(sample).collect());
        assert!(all(&mut cache, "a", 0).is_some(), "a is now the most recent");
        cache.push(&c, None, vec![sample(9)]);
        assert_eq!(cache.stats().samples, 5);
        assert!(all(&mut cache, "b", 0).is_none(), "b was least recently used");
        assert!(all(&mut cache, "a", 0).is_some() && all(&mut cache, "c", 0).is_some());
        assert_eq!(cache.stats().evictions, 1);
    }
}
