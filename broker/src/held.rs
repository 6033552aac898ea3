//! Output held for its flush with `--fsync always`: each turn that appends takes the next
//! epoch, and its output (and that of turns after it that appended nothing) waits until the
//! flush of that epoch is done. Kept apart from the event loop so the rules can be tested
//! without sockets or disks.

use std::collections::VecDeque;

/// Held items of type `T` (a turn's outputs), in turn order, with their epochs.
#[derive(Debug)]
pub struct Held<T> {
    queue: VecDeque<(u64, T)>,
    /// Last epoch asked for (0: none yet).
    epoch: u64,
    /// Highest epoch whose flush result was taken.
    flushed: u64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held { queue: VecDeque::new(), epoch: 0, flushed: 0 }
    }
}

impl<T> Held<T> {
    /// The last epoch asked for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Highest epoch whose flush result was taken.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// Whether every flush asked for has finished (its result taken).
    pub fn idle(&self) -> bool {
        self.flushed == self.epoch
    }

    /// Whether any held item satisfies `f`.
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.queue.iter().any(|(_, item)| f(item))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops everything held (shutdown, when the last flush did not finish in time).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// A turn appended: the epoch its flush will carry.
    pub fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Holds a turn's output until the flush of the last epoch asked for.
    pub fn hold(&mut self, item: T) {
        self.queue.push_back((self.epoch, item));
    }

    /// The last epoch was flushed on the caller's thread, with nothing running meanwhile.
    pub fn flushed_inline(&mut self) {
        self.flushed = self.epoch;
    }

    /// Releases held items whose flush already finished (turns that appended nothing after
    /// the last result), in order.
    pub fn release_done(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(e, _)| *e <= self.flushed) {
            out.push(self.queue.pop_front().expect("front checked").1);
        }
        out
    }

    /// Takes the result of the flush that covered epochs up to `done` and releases, in
    /// order, what may go out, each with whether it is durable. A failure fails every item
    /// held so far, not only those up to `done`: the failed writeback may have taken pages
    /// that later turns dirtied while it ran, and a page whose writeback failed is left
    /// clean, so the next flush would succeed without writing it.
    pub fn finish(&mut self, done: u64, ok: bool) -> Vec<(T, bool)> {
        let upto = if ok { done } else { self.epoch };
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(e, _)| *e <= upto) {
            out.push((self.queue.pop_front().expect("front checked").1, ok));
        }
        self.flushed = self.flushed.max(done);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_waits_for_the_flush_of_its_epoch_in_order() {
        let mut h = Held::default();
        h.hold("before any append");
        assert_eq!(h.release_done(), vec!["before any append"]);
        h.next_epoch();
        h.hold("a");
        h.hold("nothing appended, after a");
        h.next_epoch();
        h.hold("b");
        assert!(h.release_done().is_empty());
        assert!(!h.idle());
        assert_eq!(h.finish(1, true), vec![("a", true), ("nothing appended, after a", true)]);
        assert_eq!(h.finish(2, true), vec![("b", true)]);
        assert!(h.idle() && h.is_empty());
    }

    #[test]
    fn a_failed_flush_fails_every_turn_held_so_far_even_one_a_later_flush_covers() {
        // Flush 1 runs while turn b appends (epoch 2); flush 1 fails, flush 2 then finds
        // nothing dirty and succeeds: b's records were in the failed writeback, so b fails.
        let mut h = Held::default();
        h.next_epoch();
        h.hold("a");
        h.next_epoch();
        h.hold("b");
        assert_eq!(h.finish(1, false), vec![("a", false), ("b", false)]);
        assert!(h.finish(2, true).is_empty());
        // A turn after the failure was seen appends to pages dirtied again: it is judged by
        // its own flush.
        h.next_epoch();
        h.hold("c");
        assert_eq!(h.finish(3, true), vec![("c", true)]);
    }

    #[test]
    fn a_result_covering_several_epochs_releases_them_all() {
        let mut h = Held::default();
        for turn in ["a", "b", "c"] {
            h.next_epoch();
            h.hold(turn);
        }
        assert_eq!(h.finish(3, true), vec![("a", true), ("b", true), ("c", true)]);
        assert!(h.idle());
    }

    #[test]
    fn an_inline_flush_makes_the_queue_idle() {
        let mut h: Held<&str> = Held::default();
        h.next_epoch();
        h.flushed_inline();
        assert!(h.idle());
        h.hold("after");
        assert_eq!(h.release_done(), vec!["after"]);
    }
}
