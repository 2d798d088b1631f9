//! When a worker stops taking jobs by itself, and the count of takes that makes
//! [`StopWhen::MaxJobs`] exact.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// When a worker stops taking jobs by itself, set with
/// [`WorkerSettings::stop_when`](super::WorkerSettings::stop_when). Once it has stopped,
/// [`Worker::run_until`](super::Worker::run_until) lets the jobs in hand finish and returns, which
/// is what a drain-and-exit tool needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopWhen {
    /// Never: the worker takes jobs until it is closed, as a service does. The default.
    #[default]
    Never,
    /// Once a fetch finds nothing waiting. Each queue is taken from until it is found empty, and
    /// the worker stops when all are; in blocking mode it does not block. Delayed jobs, retries
    /// of the jobs in hand and jobs added later stay queued.
    Drained,
    /// Once this many jobs have been taken, all queues together. Every attempt counts: a job
    /// retried counts each time it is taken. A completion does not fetch the next job past the
    /// limit, so exactly this many are taken, unless fewer come or the worker is closed first.
    MaxJobs(u64),
}

/// The jobs a worker has taken and, under [`StopWhen::MaxJobs`], the takes left.
pub(super) struct Takes {
    /// One permit per job that may still be taken; `None` without a limit. A fetch holds a
    /// permit while it may take a job, so concurrent fetches cannot overshoot the limit.
    left: Option<Semaphore>,
    limit: u64,
    taken: AtomicU64,
}

/// The right to take one job. Dropped, it is given back; [`Takes::record`] uses it up.
pub(super) struct Take<'a>(Option<SemaphorePermit<'a>>);

impl Takes {
    pub(super) fn new(stop_when: StopWhen) -> Self {
        let limit = match stop_when {
            StopWhen::MaxJobs(max) => Some(max),
            _ => None,
        };
        Takes {
            left: limit.map(|max| Semaphore::new(max.min(Semaphore::MAX_PERMITS as u64) as usize)),
            limit: limit.unwrap_or(u64::MAX),
            taken: AtomicU64::new(0),
        }
    }

    /// The most jobs that may be taken (`u64::MAX` without a limit).
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether no job may be taken any more.
    pub(super) fn exhausted(&self) -> bool {
        self.taken.load(Ordering::Acquire) >= self.limit
    }

    /// Waits for the right to take a job (at once without a limit). Once the limit is reached
    /// it never resolves: the caller also waits for the stop request.
    pub(super) async fn reserve(&self) -> Take<'_> {
        match &self.left {
            Some(left) => match left.acquire().await {
                Ok(permit) => Take(Some(permit)),
                Err(_) => std::future::pending().await,
            },
            None => Take(None),
        }
    }

    /// The right to take a job now, if one is left.
    pub(super) fn try_reserve(&self) -> Option<Take<'_>> {
        match &self.left {
            Some(left) => left.try_acquire().ok().map(|permit| Take(Some(permit))),
            None => Some(Take(None)),
        }
    }

    /// Records a job taken with `take`; true when it was the last one allowed.
    pub(super) fn record(&self, take: Take<'_>) -> bool {
        if let Some(permit) = take.0 {
            permit.forget();
        }
        self.taken.fetch_add(1, Ordering::AcqRel) + 1 == self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_jobs_allows_exactly_that_many_takes() {
        let takes = Takes::new(StopWhen::MaxJobs(2));
        let first = takes.try_reserve().expect("a first take");
        let second = takes.try_reserve().expect("a second take");
        assert!(takes.try_reserve().is_none(), "two reservations use up a limit of two");
        drop(second);
        assert!(!takes.record(first));
        let again = takes.try_reserve().expect("a take given back can be reserved again");
        assert!(takes.record(again), "the second take is the last");
        assert!(takes.exhausted() && takes.try_reserve().is_none());
    }

    #[test]
    fn without_a_limit_takes_are_only_counted() {
        for stop_when in [StopWhen::Never, StopWhen::Drained] {
            let takes = Takes::new(stop_when);
            for _ in 0..3 {
                assert!(!takes.record(takes.try_reserve().expect("always a take")));
            }
            assert!(!takes.exhausted());
        }
    }

    #[test]
    fn a_limit_of_zero_is_exhausted_from_the_start() {
        let takes = Takes::new(StopWhen::MaxJobs(0));
        assert!(takes.exhausted() && takes.try_reserve().is_none());
    }
}
