use std::time::Duration;

use futures::future::join_all;
use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{Client, Request};

use crate::support::{key_in, source_and_other, wait_until};

/// A burst of 10,000 MOVED replies costs one topology fetch, not thousands,
/// and every request still succeeds. The burst is made real: the slot moves
/// behind the client's back, its old owner is paused, 10,000 requests are
/// sent to it, and on resume it answers all of them with MOVED at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_burst_is_single_flight() {
    // A long node timeout keeps the cluster from failing the paused node over.
    let cluster = TestCluster::start_with(ClusterSpec {
        node_timeout: Duration::from_secs(60),
        ..ClusterSpec::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .seeds(cluster.seeds())
        .refresh_interval(Duration::from_secs(3600))
        .response_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(120))
        .build()
        .await
        .unwrap();
    let slot = 777;
    let (source, target) = source_and_other(&cluster, slot).await;
    let key = key_in(slot, "burst");
    let _: () = client
        .query(&key, redis::cmd("SET").arg(&key).arg("v").clone())
        .await
        .unwrap();
    cluster.migrate_slot(slot, &target).await.unwrap();

    let before = client.stats();
    cluster.pause(&source).unwrap();
    let burst = {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let request = Request::cmd(redis::cmd("GET").arg(&key).clone());
            join_all((0..10_000).map(|_| client.execute(slot, &request))).await
        })
    };
    wait_until(Duration::from_secs(60), "10,000 requests in flight", || {
        let client = client.clone();
        async move { client.stats().attempts >= before.attempts + 10_000 }
    })
    .await;
    cluster.resume(&source).unwrap();
    for reply in burst.await.unwrap() {
        assert_eq!(
            reply.unwrap(),
            vec![redis::Value::BulkString(b"v".to_vec())]
        );
    }
    // Wait for a fetch that starts after the burst: every hint is handled by then.
    client.refresh().await.unwrap();
    let after = client.stats();
    let moved = after.moved - before.moved;
    let hints = after.refresh_requests - before.refresh_requests;
    let fetches =
        after.refreshes + after.refresh_failures - before.refreshes - before.refresh_failures;
    println!(
        "MOVED burst: {moved} MOVED replies, {hints} hints, {fetches} fetches (one of them ours)"
    );
    assert_eq!(moved, 10_000, "every request met the stale map");
    // One for the burst (later MOVED for an already patched slot send no
    // hint), plus the one `refresh()` asked for, which may merge with it.
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} fetches for one burst"
    );
    assert_eq!(
        client
            .topology()
            .primary_of_slot(slot)
            .unwrap()
            .addr()
            .as_ref(),
        target
    );
}

/// 10,000 refresh hints sent at once from 100 tasks are coalesced into
/// one or two fetches (the first hint starts one; every hint after it is
/// merged into the one next fetch, which waits out `refresh_min_gap`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_are_coalesced() {
    let cluster = TestCluster::start().await.unwrap();
    let client = Client::builder()
        .seeds(cluster.seeds())
        .refresh_interval(Duration::from_secs(3600))
        .refresh_min_gap(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let before = client.stats();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    client.hint_refresh().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let requests = client.stats().refresh_requests - before.refresh_requests;
    assert_eq!(requests, 10_000);
    client.refresh().await.unwrap();
    let fetches = client.stats().refreshes - before.refreshes;
    assert!(
        (1..=3).contains(&fetches),
        "{fetches} fetches for 10,000 hints"
    );
}

/// The periodic refresh runs on its own at the configured interval and
/// notices a change made behind the client's back, without any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_refresh_follows_changes() {
    let cluster = TestCluster::start().await.unwrap();
    let client = Client::builder()
        .seeds(cluster.seeds())
        .refresh_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let slot = 9000;
    let (_, target) = source_and_other(&cluster, slot).await;
    let version = client.stats().topology_version;
    cluster.migrate_slot(slot, &target).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the periodic refresh to see the move",
        || {
            let client = client.clone();
            let target = target.clone();
            async move {
                client
                    .topology()
                    .primary_of_slot(slot)
                    .unwrap()
                    .addr()
                    .as_ref()
                    == target
            }
        },
    )
    .await;
    let stats = client.stats();
    assert!(stats.topology_version > version);
    assert_eq!(stats.moved, 0, "no request was sent, so no MOVED either");
    assert!(stats.refreshes >= 1);
}

/// The refresher falls back to the other nodes it knows: with the only
/// seed (a replica) killed, every fetch still succeeds through another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_survives_a_dead_seed() {
    let cluster = TestCluster::start().await.unwrap();
    let primaries = cluster.primaries().await.unwrap();
    let seed = cluster.replica_of(&primaries[0]).await.unwrap();
    let client = Client::builder()
        .seeds([format!("redis://{seed}")])
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.topology().nodes().count(),
        6,
        "the seed told us of all six nodes"
    );
    cluster.kill(&seed).unwrap();
    let failures = client.stats().refresh_failures;
    let refreshes = client.stats().refreshes;
    for _ in 0..6 {
        client.refresh().await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(
        stats.refresh_failures, failures,
        "every fetch found a live node"
    );
    assert!(stats.refreshes >= refreshes + 6);
}
