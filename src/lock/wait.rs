//! Waiting for a held lock: the retry loop shared by one-key and many-key
//! acquires.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::metrics::{self, AcquireOutcome};

/// Backoff between attempts while the lock is held by someone else: short
/// at first (most holds are short), never above 100 ms, jittered so waiters
/// do not retry in step.
const WAIT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(100));

/// Runs `attempt` until it takes the lock (`Some`). `None` means held by
/// someone else: then, without a `wait`, [`Error::Contended`]; with one,
/// back off and try again until it runs out, then [`Error::Timeout`]. An
/// error from `attempt` ends the loop at once. Nothing is held while
/// waiting: each attempt either takes everything or leaves nothing. Every
/// try and the call's outcome are recorded under the key class `class`.
pub(crate) async fn until_acquired<T, F, Fut>(
    class: &'static str,
    wait: Option<Duration>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let wait_until = wait.map(|w| super::wait_deadline(started, w));
    let mut attempts = 0;
    loop {
        let tried = attempt().await;
        metrics::acquire_attempt(class, matches!(tried, Ok(None)));
        let outcome = match tried {
            Ok(Some(taken)) => {
                metrics::acquire(class, AcquireOutcome::Acquired, started.elapsed());
                return Ok(taken);
            }
            Ok(None) => None,
            Err(e) => Some((AcquireOutcome::Error, e)),
        };
        let now = Instant::now();
        let outcome = match (outcome, wait_until) {
            (Some(failed), _) => Some(failed),
            (None, None) => Some((AcquireOutcome::Contended, Error::Contended)),
            (None, Some(until)) if now >= until => Some((
                AcquireOutcome::Timeout,
                Error::Timeout {
                    waited: now - started,
                },
            )),
            (None, Some(_)) => None,
        };
        if let Some((outcome, error)) = outcome {
            metrics::acquire(class, outcome, now - started);
            return Err(error);
        }
        let wait_until = wait_until.expect("waiting only with a wait");
        tokio::time::sleep_until(wait_until.min(now + WAIT_BACKOFF.delay(attempts))).await;
        attempts += 1;
    }
}
