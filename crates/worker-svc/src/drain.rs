//! Which handlers still run, so shutdown waits for them and not for the ones it has already
//! interrupted.
//!
//! At shutdown a file job stops its ffmpeg run (the process group is killed), puts its row back
//! to `queued` and then *parks*: it never returns an outcome, so nothing is written for the job
//! in Redis, its lock expires once the worker stops renewing it, and a stalled check (of any
//! worker) moves it back to waiting, without spending one of its attempts. Shutdown waits until
//! every handler has finished or parked, not for the drain deadline to pass.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    running: usize,
    parked: usize,
}

impl Counts {
    fn settled(&self) -> bool {
        self.running == 0 && self.parked > 0
    }
}

/// The handlers of this process, running or parked.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    counts: watch::Sender<Counts>,
}

impl Drain {
    /// Counts a handler as running until the returned guard is dropped or parked.
    pub(crate) fn enter(self: &Arc<Self>) -> Running {
        self.counts.send_modify(|c| c.running += 1);
        Running { drain: self.clone(), parked: false }
    }

    /// Whether nothing runs and at least one handler is parked: everything left is waiting for
    /// its lock to expire, so there is nothing to wait for.
    #[cfg(test)]
    pub(crate) fn is_settled(&self) -> bool {
        self.counts.borrow().settled()
    }

    /// Resolves once [`Drain::is_settled`].
    pub(crate) async fn settled(&self) {
        let _ = self.counts.subscribe().wait_for(Counts::settled).await;
    }
}

/// One running handler.
#[derive(Debug)]
pub(crate) struct Running {
    drain: Arc<Drain>,
    parked: bool,
}

impl Running {
    /// Parks the handler for good: counted as parked at once, and the future never resolves
    /// (the process drops it on exit).
    pub(crate) fn park<T>(mut self) -> impl Future<Output = T> {
        self.parked = true;
        self.drain.counts.send_modify(|c| {
            c.running -= 1;
            c.parked += 1;
        });
        async move {
            let _parked = self;
            std::future::pending().await
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.drain.counts.send_modify(|c| {
            if self.parked {
                c.parked -= 1;
            } else {
                c.running -= 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_when_every_handler_is_parked() {
        let drain = Arc::new(Drain::default());
        assert!(!drain.is_settled(), "nothing parked: shutdown waits for the worker instead");
        let (a, b) = (drain.enter(), drain.enter());
        let parked = a.park::<()>();
        assert!(!drain.is_settled(), "one handler still runs");
        drop(b);
        assert!(drain.is_settled());
        drain.settled().await;
        drop(parked);
        assert!(!drain.is_settled());
    }
}
