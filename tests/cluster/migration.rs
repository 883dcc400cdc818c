use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shardlock::testkit::TestCluster;

use crate::support::{client, key_in, source_and_other, wait_until};

const TASKS: usize = 32;
const KEYS: usize = 64;

/// A slot is migrated with its keys, in steps, while 32 tasks write and read
/// its keys without pause: not one command fails, every read sees the value
/// written before it, and both ASK (mid-migration) and MOVED (after it)
/// were really met and followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_loses_no_command() {
    let cluster = TestCluster::start().await.unwrap();
    let client = client(&cluster).await;
    let slot = 4242;
    let (_, target) = source_and_other(&cluster, slot).await;
    for i in 0..KEYS {
        let key = key_in(slot, &format!("k{i}"));
        let _: () = client
            .query(&key, redis::cmd("SET").arg(&key).arg("0").clone())
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (client, stop, ops) = (client.clone(), stop.clone(), ops.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            let mut n: u64 = 0;
            while !stop.load(Relaxed) && n < 1_000_000 {
                n += 1;
                // Existing keys (moved one by one) and fresh ones (created
                // on whichever side the migration state says).
                let shared = n.is_multiple_of(2);
                let key = if shared {
                    key_in(slot, &format!("k{}", (n as usize + t) % KEYS))
                } else {
                    key_in(slot, &format!("t{t}-{n}"))
                };
                let value = format!("{t}-{n}");
                let set: shardlock::Result<()> = client
                    .query(&key, redis::cmd("SET").arg(&key).arg(&value).clone())
                    .await;
                let get: shardlock::Result<Option<String>> = client
                    .query(&key, redis::cmd("GET").arg(&key).clone())
                    .await;
                match (set, get) {
                    // Another task may overwrite a shared key between our SET and GET.
                    (Ok(()), Ok(Some(v))) if shared || v == value => {}
                    (set, get) => failures.push(format!("{key}: set {set:?} get {get:?}")),
                }
                ops.fetch_add(1, Relaxed);
            }
            failures
        });
    }

    let progressed = |min: u64| {
        let ops = ops.clone();
        async move {
            let start = ops.load(Relaxed);
            wait_until(
                Duration::from_secs(30),
                "the writers to make progress",
                || {
                    let ops = ops.clone();
                    async move { ops.load(Relaxed) >= start + min }
                },
            )
            .await;
        }
    };
    progressed(200).await;
    let mut migration = cluster.begin_migration(slot, &target).await.unwrap();
    progressed(200).await;
    // Move the keys a few at a time, letting the writers hit both sides.
    while migration.move_keys(8).await.unwrap() > 0 {
        progressed(100).await;
    }
    progressed(200).await;
    migration.finish().await.unwrap();
    progressed(500).await;
    stop.store(true, Relaxed);

    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed commands, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let stats = client.stats();
    assert!(stats.ask > 0, "no ASK was met: {stats:?}");
    assert!(stats.moved > 0, "no MOVED was met: {stats:?}");
    assert_eq!(
        client
            .topology()
            .primary_of_slot(slot)
            .unwrap()
            .addr()
            .as_ref(),
        target,
        "the slot map follows the migration"
    );
    // Every key ended on the target.
    let count = cluster
        .command(
            &target,
            redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot),
        )
        .await
        .unwrap();
    assert!(
        matches!(count, redis::Value::Int(n) if n >= KEYS as i64),
        "{count:?}"
    );
    println!(
        "migration: {} ops, moved={} ask={} refreshes={} refresh_requests={}",
        ops.load(Relaxed),
        stats.moved,
        stats.ask,
        stats.refreshes,
        stats.refresh_requests
    );
}
