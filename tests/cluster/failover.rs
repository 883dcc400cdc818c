use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shardlock::Client;
use shardlock::testkit::TestCluster;
use tokio::time::Instant;

use crate::support::{key_in, wait_until};

/// The shard that loses its primary serves this slot.
const LOST_SLOT: u16 = 100;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Writes (and, where `check` is set, reads back) keys of `slot` until
/// `stop`; returns the longest time between two successes and the errors.
async fn writer(
    client: Client,
    id: usize,
    slot: u16,
    check: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> (Duration, Vec<String>) {
    let mut errors = Vec::new();
    let mut last_ok = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut n = 0u64;
    while !stop.load(Relaxed) && n < 1_000_000 {
        n += 1;
        // Keys of their own, so a read sees this writer's last write.
        let key = key_in(slot, &format!("w{id}-{}", n % 16));
        let value = n.to_string();
        let set: shardlock::Result<()> = client
            .query(&key, redis::cmd("SET").arg(&key).arg(&value).clone())
            .await;
        let outcome = match set {
            Ok(()) if check => {
                let get: shardlock::Result<Option<String>> = client
                    .query(&key, redis::cmd("GET").arg(&key).clone())
                    .await;
                match get {
                    Ok(Some(v)) if v == value => Ok(()),
                    other => Err(format!("GET {key}: {other:?}")),
                }
            }
            Ok(()) => Ok(()),
            Err(e) => Err(format!("SET {key}: {e}")),
        };
        match outcome {
            Ok(()) => {
                longest_gap = longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
                tally.ok.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tally.failed.fetch_add(1, Relaxed);
                errors.push(e);
            }
        }
    }
    (longest_gap, errors)
}

/// Runs writers on every shard, applies `fault` to the primary of
/// `LOST_SLOT`, and checks what must hold; returns the lost shard's gap.
async fn survive(kill: bool) -> Duration {
    let cluster = TestCluster::start().await.unwrap();
    let client = Client::builder()
        .seeds(cluster.seeds())
        .refresh_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(15))
        .build()
        .await
        .unwrap();
    let lost = cluster.primary_of_slot(LOST_SLOT).await.unwrap();
    let mut other_slots = Vec::new();
    for primary in cluster.primaries().await.unwrap() {
        if primary != lost {
            let topology = client.topology();
            let slot = (0..shardlock::SLOT_COUNT)
                .find(|s| topology.primary_of_slot(*s).unwrap().addr().as_ref() == primary)
                .unwrap();
            other_slots.push(slot);
        }
    }
    assert_eq!(other_slots.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let lost_tally = Arc::new(Tally::default());
    let other_tally = Arc::new(Tally::default());
    let mut others = tokio::task::JoinSet::new();
    let mut lost_writers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let slot = other_slots[i % 2];
        others.spawn(writer(
            client.clone(),
            i,
            slot,
            true,
            stop.clone(),
            other_tally.clone(),
        ));
    }
    for i in 0..4 {
        lost_writers.spawn(writer(
            client.clone(),
            i,
            LOST_SLOT,
            false,
            stop.clone(),
            lost_tally.clone(),
        ));
    }
    let ok_after = |tally: Arc<Tally>, more: u64, what: &'static str| async move {
        let start = tally.ok.load(Relaxed);
        wait_until(Duration::from_secs(60), what, || {
            let tally = tally.clone();
            async move { tally.ok.load(Relaxed) >= start + more }
        })
        .await;
    };
    ok_after(lost_tally.clone(), 100, "writes before the fault").await;

    if kill {
        cluster.kill(&lost).unwrap();
        // The cluster promotes the replica on its own.
        let cluster = &cluster;
        let lost = lost.clone();
        wait_until(Duration::from_secs(60), "the replica's promotion", || {
            let lost = lost.clone();
            async move { matches!(cluster.primary_of_slot(LOST_SLOT).await, Ok(p) if p != lost) }
        })
        .await;
    } else {
        let promoted = cluster.failover(&lost).await.unwrap();
        assert_ne!(promoted, lost);
    }
    ok_after(lost_tally.clone(), 100, "the lost shard to serve again").await;
    ok_after(other_tally.clone(), 100, "the other shards to go on").await;
    stop.store(true, Relaxed);

    let mut other_errors = Vec::new();
    while let Some(r) = others.join_next().await {
        other_errors.extend(r.unwrap().1);
    }
    let mut gap = Duration::ZERO;
    let mut lost_errors = Vec::new();
    while let Some(r) = lost_writers.join_next().await {
        let (g, e) = r.unwrap();
        gap = gap.max(g);
        lost_errors.extend(e);
    }
    assert!(
        other_errors.is_empty(),
        "commands for other shards failed: {:?}",
        &other_errors[..other_errors.len().min(5)]
    );
    let new_primary = cluster.primary_of_slot(LOST_SLOT).await.unwrap();
    assert_eq!(
        client
            .topology()
            .primary_of_slot(LOST_SLOT)
            .unwrap()
            .addr()
            .as_ref(),
        new_primary,
        "the client's slot map names the promoted replica"
    );
    println!(
        "failover ({}): lost-shard gap {:?}, lost-shard errors {}, ok {}/{} (lost/other), stats {:?}",
        if kill { "kill -9" } else { "CLUSTER FAILOVER" },
        gap,
        lost_errors.len(),
        lost_tally.ok.load(Relaxed),
        other_tally.ok.load(Relaxed),
        client.stats()
    );
    gap
}

/// `CLUSTER FAILOVER` on a replica: commands for the other shards never
/// fail, and commands for the failed-over shard succeed again afterwards
/// (MOVED from the demoted primary leads to the new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_failover() {
    survive(false).await;
}

/// kill -9 of a primary: commands for the other shards never fail (they
/// ride out the cluster's brief CLUSTERDOWN), and commands for the lost
/// shard succeed again once the replica is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed() {
    survive(true).await;
}
