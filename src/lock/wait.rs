//! Waiting for a held lock: the retry loop shared by one-key and many-key
//! acquires.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// Backoff between attempts while the lock is held by someone else: short
/// at first (most holds are short), never above 100 ms, jittered so waiters
/// do not retry in step.
const WAIT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(100));

/// Runs `attempt` until it takes the lock (`Some`). `None` means held by
/// someone else: then, without a `wait`, [`Error::Contended`]; with one,
/// back off and try again until it runs out, then [`Error::Timeout`]. An
/// error from `attempt` ends the loop at once. Nothing is held while
/// waiting: each attempt either takes everything or leaves nothing.
pub(crate) async fn until_acquired<T, F, Fut>(wait: Option<Duration>, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let wait_until = wait.map(|w| started + w);
    let mut attempts = 0;
    loop {
        if let Some(taken) = attempt().await? {
            crate::metrics::acquired(started.elapsed());
            return Ok(taken);
        }
        let Some(wait_until) = wait_until else {
            crate::metrics::acquire_failed("contended");
            return Err(Error::Contended);
        };
        let now = Instant::now();
        if now >= wait_until {
            crate::metrics::acquire_failed("timeout");
            return Err(Error::Timeout {
                waited: now - started,
            });
        }
        tokio::time::sleep_until(wait_until.min(now + WAIT_BACKOFF.delay(attempts))).await;
        attempts += 1;
    }
}
