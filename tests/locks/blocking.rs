//! `.replicas(n)` runs `WAIT` on a connection of its own: it never holds
//! up the other requests and renewals of its primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use redis::Value;
use shardlock::testkit::TestCluster;
use shardlock::{Error, LockManager};
use tokio::time::Instant;

use crate::support::recorded::{counter_with, recorded};
use crate::support::{key_in, wait_until};

/// The slot of every key here.
const SLOT: u16 = 42;

/// A manager whose `WAIT` lasts `response_timeout / 2`.
async fn manager(cluster: &TestCluster, response_timeout: Duration) -> LockManager {
    LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .response_timeout(response_timeout)
        .request_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap()
}

/// Clients of the node at `addr` blocked in `WAIT` now (`CLIENT LIST`).
async fn blocked_in_wait(cluster: &TestCluster, addr: &str) -> usize {
    let list = match cluster
        .command(addr, redis::cmd("CLIENT").arg("LIST"))
        .await
    {
        Ok(Value::BulkString(b)) => String::from_utf8(b).unwrap(),
        Ok(Value::VerbatimString { text, .. }) => text,
        other => panic!("CLIENT LIST on {addr}: {other:?}"),
    };
    list.lines()
        .filter(|l| l.contains(" cmd=wait ") && l.split(' ').any(|f| f == "flags=b"))
        .count()
}

/// With the replica paused, so that `WAIT` waits its whole timeout: while
/// a `.replicas(1)` acquire is blocked in `WAIT` on the primary, a plain
/// try_acquire and release of another key on the same primary completes
/// (and the `WAIT` is still blocked when it has); the replicas acquire
/// then fails with `ReplicationTimeout` and gives its lease back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_does_not_hold_up_the_primary() {
    let cluster = TestCluster::start().await.unwrap();
    // WAIT lasts 4 s: far longer than a plain cycle on loopback.
    let mgr = manager(&cluster, Duration::from_secs(8)).await;
    let primary = cluster.primary_of_slot(SLOT).await.unwrap();
    let replica = cluster.replica_of(&primary).await.unwrap();
    // Warm: the shared connection to the primary exists.
    let warm = mgr.lock(key_in(SLOT, "warm")).try_acquire().await.unwrap();
    warm.unwrap().release().await.unwrap();

    cluster.pause(&replica).unwrap();
    let waiting = {
        let mgr = mgr.clone();
        tokio::spawn(async move {
            mgr.lock(key_in(SLOT, "replicated"))
                .ttl(Duration::from_secs(30))
                .replicas(1)
                .acquire()
                .await
        })
    };
    let (c, p) = (&cluster, primary.as_str());
    wait_until(
        Duration::from_secs(10),
        "the replicas acquire blocked in WAIT",
        || async move { blocked_in_wait(c, p).await == 1 },
    )
    .await;

    let plain = mgr.lock(key_in(SLOT, "plain"));
    let guard = plain
        .try_acquire()
        .await
        .unwrap()
        .expect("the plain key is free");
    guard.release().await.unwrap();
    assert_eq!(
        blocked_in_wait(&cluster, &primary).await,
        1,
        "the plain cycle finished only after WAIT returned: it queued behind it"
    );
    assert!(!waiting.is_finished());

    let outcome = waiting.await.unwrap();
    assert!(
        matches!(
            outcome,
            Err(Error::ReplicationTimeout {
                acked: 0,
                wanted: 1
            })
        ),
        "{outcome:?}"
    );
    cluster.resume(&replica).unwrap();
    // The lease was given back.
    let again = mgr
        .lock(key_in(SLOT, "replicated"))
        .try_acquire()
        .await
        .unwrap();
    assert!(
        again.is_some(),
        "the replicas acquire left its lease behind"
    );
}

/// Concurrent `.replicas(1)` acquires on one primary use at most 8
/// connections there (at most 8 `WAIT`s blocked at once); the others wait
/// for a free one within their deadline, and every one of them ends (here
/// with `ReplicationTimeout`, the replica being paused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_connections_are_bounded() {
    const ACQUIRES: usize = 12;
    const BOUND: usize = 8;
    let cluster = TestCluster::start().await.unwrap();
    let mgr = manager(&cluster, Duration::from_secs(2)).await;
    let primary = cluster.primary_of_slot(SLOT).await.unwrap();
    let replica = cluster.replica_of(&primary).await.unwrap();
    cluster.pause(&replica).unwrap();
    let acquires: Vec<_> = (0..ACQUIRES)
        .map(|i| {
            let mgr = mgr.clone();
            tokio::spawn(async move {
                mgr.lock(key_in(SLOT, &format!("bounded{i}")))
                    .replicas(1)
                    .acquire()
                    .await
            })
        })
        .collect();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acquires.iter().all(|a| a.is_finished()) {
        assert!(Instant::now() < deadline, "the acquires did not end");
        most = most.max(blocked_in_wait(&cluster, &primary).await);
        assert!(most <= BOUND, "{most} WAITs blocked at once on {primary}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        most, BOUND,
        "the first {BOUND} acquires were in WAIT together"
    );
    for a in acquires {
        let r = a.await.unwrap();
        assert!(
            matches!(r, Err(Error::ReplicationTimeout { acked: 0, .. })),
            "{r:?}"
        );
    }
    cluster.resume(&replica).unwrap();
}

/// The p-th percentile (0..=100) of `samples`, sorted in place.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() - 1) * p / 100]
}

/// Plain try_acquire+release cycles on one primary, one after the other,
/// until `enough` holds (checked before each cycle; at most 100,000
/// cycles, at least 300): their latencies.
async fn plain_cycles(mgr: &LockManager, name: &str, enough: impl Fn() -> bool) -> Vec<Duration> {
    let mut samples = Vec::new();
    for i in 0..100_000 {
        if i >= 300 && enough() {
            break;
        }
        let started = Instant::now();
        let guard = mgr
            .lock(key_in(SLOT, &format!("{name}{i}")))
            .try_acquire()
            .await
            .unwrap()
            .expect("free");
        guard.release().await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// Measurement, not a check (run with `--ignored --nocapture`): p50/p99 of
/// plain try_acquire+release cycles on a primary whose replica is paused,
/// alone and while a loop of `.replicas(1)` acquires (each blocked in
/// `WAIT` for its full timeout, 500 ms with the default response timeout)
/// runs on the same primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints latencies"]
async fn plain_cycle_latency_beside_replicas_acquires() {
    let cluster = TestCluster::start().await.unwrap();
    let mgr = manager(&cluster, Duration::from_secs(1)).await;
    let primary = cluster.primary_of_slot(SLOT).await.unwrap();
    let replica = cluster.replica_of(&primary).await.unwrap();
    cluster.pause(&replica).unwrap();
    plain_cycles(&mgr, "warm", || true).await;
    let mut alone = plain_cycles(&mgr, "alone", || true).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acquires = Arc::new(AtomicU32::new(0));
    let looping = {
        let (mgr, stop, acquires) = (mgr.clone(), stop.clone(), acquires.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let r = mgr.lock(key_in(SLOT, "looped")).replicas(1).acquire().await;
                assert!(matches!(r, Err(Error::ReplicationTimeout { .. })), "{r:?}");
                acquires.fetch_add(1, Relaxed);
            }
        })
    };
    let (c, p) = (&cluster, primary.as_str());
    wait_until(
        Duration::from_secs(10),
        "a replicas acquire in WAIT",
        || async move { blocked_in_wait(c, p).await == 1 },
    )
    .await;
    // Through several WAITs.
    let from = acquires.load(Relaxed);
    let mut beside = plain_cycles(&mgr, "beside", || acquires.load(Relaxed) >= from + 6).await;
    stop.store(true, Relaxed);
    looping.await.unwrap();
    let acquires = acquires.load(Relaxed) - from;
    cluster.resume(&replica).unwrap();
    println!(
        "plain try+release cycles on {primary} (replica paused): alone p50 {:?} p99 {:?}; \
         beside a loop of .replicas(1) acquires ({acquires} done meanwhile, each WAIT 500 ms) \
         p50 {:?} p99 {:?} ({} and {} cycles)",
        percentile(&mut alone, 50),
        percentile(&mut alone, 99),
        percentile(&mut beside, 50),
        percentile(&mut beside, 99),
        alone.len(),
        beside.len(),
    );
}

/// With the slot's primary dead (connections refused) and the slot map
/// still naming it, concurrent `.replicas(1)` acquires do not each open a
/// connection per attempt: blocking connections go through the node's
/// reconnect backoff, so refused attempts stay a handful while the other
/// attempts fail fast in backoff.
#[test]
fn blocking_connects_respect_the_reconnect_backoff() {
    const ACQUIRES: usize = 8;
    let snapshot = recorded(|| async {
        let cluster = TestCluster::start().await.unwrap();
        let mgr = LockManager::builder()
            .seeds(cluster.seeds())
            .namespace("lock:")
            // Over before the replica can take over (node timeout 1 s).
            .request_timeout(Duration::from_millis(800))
            .build()
            .await
            .unwrap();
        let primary = cluster.primary_of_slot(SLOT).await.unwrap();
        cluster.kill(&primary).unwrap();
        let acquires = (0..ACQUIRES).map(|i| {
            mgr.lock(key_in(SLOT, &format!("dead{i}")))
                .replicas(1)
                .acquire()
        });
        for result in futures::future::join_all(acquires).await {
            assert!(result.is_err(), "an acquire on a dead primary succeeded");
        }
    });
    let kind = |k: &str| {
        counter_with(
            &snapshot,
            shardlock::metrics::COMMAND_ERRORS_TOTAL,
            &[("kind", k)],
        )
    };
    let (refused, backoff) = (kind("connection_refused"), kind("node_backoff"));
    println!(
        "{ACQUIRES} concurrent .replicas(1) acquires on a dead primary for 800 ms: \
         {refused} refused connection attempts, {backoff} attempts failed fast in backoff"
    );
    assert!(
        refused <= 10,
        "{refused} refused connection attempts: one per blocking attempt, not per backoff delay"
    );
    assert!(backoff > 0, "no attempt met the node's backoff");
}
