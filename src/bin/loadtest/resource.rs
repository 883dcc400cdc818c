//! `--resource`: the protected resource, a standalone `redis-server` apart
//! from the cluster, that accepts a holder's write only with a fencing
//! token not below the highest it has accepted for that key
//! (`fenced_write.lua`), and numbers every write in one total order. Also
//! the clock every holder stamps its events with.
//!
//! Each process has its own connection. A write that gets no answer within
//! [`WRITE_TIMEOUT`] is recorded as failed (it may still have been applied;
//! the checker leaves it out of the order).

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use redis::aio::MultiplexedConnection;

use crate::observer::{LeaseId, WriteOutcome};

/// How long a write may take before it counts as failed.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The resource's key prefix; its write counter is `resource:seq`.
const PREFIX: &str = "resource:";

/// CLOCK_MONOTONIC in ns: one clock for every process on the host (Linux
/// keeps it system-wide), so events of different processes compare.
pub(crate) fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        // CLOCK_MONOTONIC exists on every Linux; 0 would only make events
        // look early, never hide one.
        Err(_) => 0,
    }
}

/// One process's connection to the protected resource.
#[derive(Clone)]
pub(crate) struct Resource {
    conn: MultiplexedConnection,
    script: std::sync::Arc<redis::Script>,
}

impl Resource {
    /// Connects to the resource at `url`.
    pub(crate) async fn connect(url: &str) -> Result<Resource, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("bad resource address {url}: {e}"))?;
        let conn = tokio::time::timeout(WRITE_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("the resource at {url} did not answer"))?
            .map_err(|e| format!("cannot reach the resource at {url}: {e}"))?;
        Ok(Resource {
            conn,
            script: std::sync::Arc::new(redis::Script::new(include_str!("fenced_write.lua"))),
        })
    }

    /// Writes `(key, token, holder, lease)` through the compare-and-set.
    pub(crate) async fn write(&self, key: u64, token: u64, lease: LeaseId) -> WriteOutcome {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(format!("{PREFIX}k:{key}"));
        invocation
            .key(format!("{PREFIX}seq"))
            .arg(token)
            .arg(format!("p{}.w{}", lease.process, lease.worker))
            .arg(lease.label());
        let reply = tokio::time::timeout(
            WRITE_TIMEOUT,
            invocation.invoke_async::<(i64, String, u64)>(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok((1, _, seq))) => WriteOutcome::Accepted { seq },
            Ok(Ok((_, highest, seq))) => match highest.parse() {
                Ok(highest) => WriteOutcome::Rejected { seq, highest },
                Err(_) => WriteOutcome::Failed,
            },
            Ok(Err(_)) | Err(_) => WriteOutcome::Failed,
        }
    }
}
