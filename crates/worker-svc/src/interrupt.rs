//! Why a running job stops before it is done, and how long work notices: the process is
//! shutting down, the job's lock was lost (another worker may run it now), or its time is up.

use std::time::Duration;

use queue_core::ActiveJob;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a running tool checks whether the job's lock was lost.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// What stopped a job early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// SIGTERM or Ctrl-C: the job is left to be retried.
    Shutdown,
    /// Another worker may own the job now: nothing more is written for it.
    LockLost,
    /// `WORKER_JOB_TIMEOUT_MS` passed.
    TimedOut(Duration),
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interrupt::Shutdown => f.write_str("interrupted by worker shutdown; will be retried"),
            Interrupt::LockLost => f.write_str("the job's lock was lost"),
            Interrupt::TimedOut(limit) => write!(f, "processing timed out after {} ms", limit.as_millis()),
        }
    }
}

/// The conditions one job watches while it runs.
#[derive(Clone, Debug)]
pub(crate) struct Watch {
    shutdown: watch::Receiver<bool>,
    job: Option<ActiveJob>,
    deadline: Instant,
    timeout: Duration,
}

impl Watch {
    /// Watches `shutdown`, `job`'s lock (when given) and a deadline `timeout` from now.
    pub(crate) fn new(shutdown: watch::Receiver<bool>, job: Option<ActiveJob>, timeout: Duration) -> Self {
        Watch { shutdown, job, deadline: Instant::now() + timeout, timeout }
    }

    /// What has happened already, if anything.
    pub(crate) fn check(&self) -> Option<Interrupt> {
        if *self.shutdown.borrow() {
            Some(Interrupt::Shutdown)
        } else if self.job.as_ref().is_some_and(ActiveJob::lock_lost) {
            Some(Interrupt::LockLost)
        } else if Instant::now() >= self.deadline {
            Some(Interrupt::TimedOut(self.timeout))
        } else {
            None
        }
    }

    /// Resolves when one of the conditions happens (at once if one has).
    pub(crate) async fn wait(&self) -> Interrupt {
        let mut shutdown = self.shutdown.clone();
        loop {
            if let Some(interrupt) = self.check() {
                return interrupt;
            }
            tokio::select! {
                // The sender gone means the service is gone: as good as a shutdown.
                changed = shutdown.changed() => if changed.is_err() { return Interrupt::Shutdown },
                _ = tokio::time::sleep_until(self.deadline) => {}
                _ = tokio::time::sleep(LOCK_POLL), if self.job.is_some() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_and_deadline_are_noticed() {
        let (tx, rx) = watch::channel(false);
        let watch = Watch::new(rx.clone(), None, Duration::from_secs(60));
        assert_eq!(watch.check(), None);
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.wait().await }
        });
        tx.send_replace(true);
        assert_eq!(waiting.await.unwrap(), Interrupt::Shutdown);

        let (_tx, rx) = watch::channel(false);
        let watch = Watch::new(rx, None, Duration::from_millis(20));
        assert_eq!(watch.wait().await, Interrupt::TimedOut(Duration::from_millis(20)));
    }
}
