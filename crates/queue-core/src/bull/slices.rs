//! How much one script call may touch: the slices that keep every call of ours to about a
//! millisecond of Redis time, whatever the size of the queue.
//!
//! Redis runs one command at a time, so a script that runs for 15 ms delays every other client
//! of the server by 15 ms: producers' adds, every worker's lock renewals, health checks. Every
//! operation that can touch many jobs therefore works in slices, one script call per slice, and
//! is called again until it is done; other clients' commands run between the calls.
//!
//! The defaults were measured on a 2-core development machine against Redis 7.0 with AOF on
//! (`appendfsync always`), jobs of about 100 bytes of data, with the slow log recording every
//! call (`slowlog-log-slower-than 0`); see `tests/it/bounded.rs` (`measure_slices`, ignored) and
//! the figures in `ARCHITECTURE.md`. Each default keeps a call near half a millisecond and its
//! 99th percentile under about 1 ms on that machine. Larger payloads cost more per job: lower
//! the slice; faster hardware can take larger ones.

/// Jobs per `addJobs` call of [`Queue::add_bulk`](crate::Queue::add_bulk).
pub const DEFAULT_ADD_SLICE: usize = 20;
/// Jobs looked at per call of [`QueueAdmin::clean`](crate::QueueAdmin::clean).
pub const DEFAULT_CLEAN_SLICE: usize = 25;
/// Jobs deleted per call of [`QueueAdmin::obliterate`](crate::QueueAdmin::obliterate).
pub const DEFAULT_OBLITERATE_SLICE: usize = 50;
/// Jobs moved per call of [`QueueAdmin::retry_all_failed`](crate::QueueAdmin::retry_all_failed).
pub const DEFAULT_RETRY_SLICE: usize = 75;
/// Jobs promoted per call by [`QueueAdmin::promote_all`](crate::QueueAdmin::promote_all) and by a
/// worker's delayed promoter.
pub const DEFAULT_PROMOTE_SLICE: usize = 40;
/// Active jobs looked at per call of a worker's stalled check.
pub const DEFAULT_STALLED_SLICE: usize = 35;
/// Old finished jobs a keep policy (`removeOnComplete`, `removeOnFail`) deletes per finish.
pub const DEFAULT_KEEP_SLICE: usize = 60;
/// Locks renewed per `extendLocks` call of a worker.
pub const DEFAULT_RENEW_SLICE: usize = 50;
/// The largest slice accepted: larger values are lowered to it. Lua's `unpack` and a single
/// reply stay well within their limits, and a call that large is a stall anyway.
pub const MAX_SLICE: usize = 5000;

/// How many jobs one script call may touch, per operation. Defaults are the constants above;
/// every value is at least 1 and at most [`MAX_SLICE`].
///
/// A [`Queue`](crate::Queue) or [`QueueAdmin`](crate::QueueAdmin) uses `add`, `clean`,
/// `obliterate`, `retry` and `promote` (set with `with_slices`); a
/// [`Worker`](crate::Worker) uses `promote`, `stalled`, `keep` and `renew` (set with
/// [`WorkerSettings::slices`](crate::WorkerSettings::slices)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Slices {
    /// Jobs per call of `add_bulk` ([`DEFAULT_ADD_SLICE`]).
    pub add: usize,
    /// Jobs looked at per call of `clean` ([`DEFAULT_CLEAN_SLICE`]).
    pub clean: usize,
    /// Jobs deleted per call of `obliterate` ([`DEFAULT_OBLITERATE_SLICE`]).
    pub obliterate: usize,
    /// Jobs moved per call of `retry_all_failed` ([`DEFAULT_RETRY_SLICE`]).
    pub retry: usize,
    /// Jobs promoted per call of `promote_all` and of the delayed promoter
    /// ([`DEFAULT_PROMOTE_SLICE`]).
    pub promote: usize,
    /// Active jobs looked at per call of the stalled check ([`DEFAULT_STALLED_SLICE`]).
    pub stalled: usize,
    /// Old finished jobs deleted per finish by a keep policy ([`DEFAULT_KEEP_SLICE`]).
    pub keep: usize,
    /// Locks renewed per call ([`DEFAULT_RENEW_SLICE`]).
    pub renew: usize,
}

impl Default for Slices {
    fn default() -> Self {
        Slices {
            add: DEFAULT_ADD_SLICE,
            clean: DEFAULT_CLEAN_SLICE,
            obliterate: DEFAULT_OBLITERATE_SLICE,
            retry: DEFAULT_RETRY_SLICE,
            promote: DEFAULT_PROMOTE_SLICE,
            stalled: DEFAULT_STALLED_SLICE,
            keep: DEFAULT_KEEP_SLICE,
            renew: DEFAULT_RENEW_SLICE,
        }
    }
}

/// A slice as the scripts take it: at least 1, at most [`MAX_SLICE`].
fn bounded(n: usize) -> usize {
    n.clamp(1, MAX_SLICE)
}

impl Slices {
    /// Sets the jobs per call of `add_bulk`.
    #[allow(clippy::should_implement_trait, reason = "a setter named after its field, like the others")]
    pub fn add(mut self, n: usize) -> Self {
        self.add = n;
        self
    }
    /// Sets the jobs looked at per call of `clean`.
    pub fn clean(mut self, n: usize) -> Self {
        self.clean = n;
        self
    }
    /// Sets the jobs deleted per call of `obliterate`.
    pub fn obliterate(mut self, n: usize) -> Self {
        self.obliterate = n;
        self
    }
    /// Sets the jobs moved per call of `retry_all_failed`.
    pub fn retry(mut self, n: usize) -> Self {
        self.retry = n;
        self
    }
    /// Sets the jobs promoted per call of `promote_all` and the delayed promoter.
    pub fn promote(mut self, n: usize) -> Self {
        self.promote = n;
        self
    }
    /// Sets the active jobs looked at per call of the stalled check.
    pub fn stalled(mut self, n: usize) -> Self {
        self.stalled = n;
        self
    }
    /// Sets the old finished jobs deleted per finish by a keep policy.
    pub fn keep(mut self, n: usize) -> Self {
        self.keep = n;
        self
    }
    /// Sets the locks renewed per call.
    pub fn renew(mut self, n: usize) -> Self {
        self.renew = n;
        self
    }

    /// Every value within 1..=[`MAX_SLICE`].
    pub(crate) fn bounded(self) -> Self {
        Slices {
            add: bounded(self.add),
            clean: bounded(self.clean),
            obliterate: bounded(self.obliterate),
            retry: bounded(self.retry),
            promote: bounded(self.promote),
            stalled: bounded(self.stalled),
            keep: bounded(self.keep),
            renew: bounded(self.renew),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_kept_within_one_and_the_maximum() {
        let s = Slices::default().add(0).clean(MAX_SLICE + 1).retry(7).bounded();
        assert_eq!((s.add, s.clean, s.retry), (1, MAX_SLICE, 7));
        assert_eq!(Slices::default().bounded(), Slices::default());
    }
}
