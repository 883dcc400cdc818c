//! The lock keys the run left in the cluster: after every guard is released
//! (and, with `--processes`, every client process has exited), each
//! primary is scanned for the load test's prefix and each key's value read
//! (`<token>` or `<token>.<fence>`). The checker sorts them into orphaned
//! and unreleased leases.
//!
//! Scans poll until nothing is left or [`SETTLE`] has passed, so the
//! in-process manager's background releases (still running in
//! single-process runs) get to finish; what is left then is reported.
//! A primary that does not answer within [`SCAN_TIMEOUT`] is skipped.

use std::time::Duration;

use redis::AsyncCommands;
use shardlock::LockManager;

use crate::observer::Leftover;
use crate::workload::{NAMESPACE, key_number};

/// How long to wait for the keys to go.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// How long one primary's scan may take.
pub(crate) const SCAN_TIMEOUT: Duration = Duration::from_secs(5);

/// Scans until no lock key is left or [`SETTLE`] has passed; `auth` is the
/// `user:password@` of the seeds, if any.
pub(crate) async fn scan(mgr: &LockManager, auth: &str) -> Result<Vec<Leftover>, String> {
    let _ = mgr.client().refresh().await;
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let left = scan_once(mgr, auth).await?;
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scan_once(mgr: &LockManager, auth: &str) -> Result<Vec<Leftover>, String> {
    let topology = mgr.client().topology();
    let mut left = Vec::new();
    for shard in topology.shards() {
        let addr = shard.primary().addr();
        let scanned =
            tokio::time::timeout(SCAN_TIMEOUT, scan_node(&format!("redis://{auth}{addr}")))
                .await
                .unwrap_or_else(|_| Err(format!("{addr}: no answer")));
        match scanned {
            Ok(mut found) => left.append(&mut found),
            Err(e) => eprintln!("leftover scan: {e}"),
        }
    }
    Ok(left)
}

async fn scan_node(url: &str) -> Result<Vec<Leftover>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    // SCAN ends when the cursor comes back to 0; bounded by the key count.
    for _ in 0..1_000_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{NAMESPACE}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut left = Vec::with_capacity(keys.len());
    for key in keys {
        let value: Option<String> = conn.get(&key).await.map_err(|e| format!("{url}: {e}"))?;
        let (Some(value), Some(n)) = (value, key_number(&key.as_bytes()[NAMESPACE.len()..])) else {
            continue; // expired meanwhile, or not one of ours
        };
        let fence = value.split_once('.').and_then(|(_, f)| f.parse().ok());
        left.push(Leftover { key: n, fence });
    }
    Ok(left)
}
