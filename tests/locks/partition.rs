//! Leases across real network partitions: a proxied test cluster whose
//! links are cut silently (no reset, no refusal), then healed.

use std::time::Duration;

use shardlock::LockManager;
use shardlock::testkit::{ClusterSpec, TestCluster};
use tokio::time::Instant;

use crate::support::{key_in, wait_until};

const SETTLE: Duration = Duration::from_secs(30);

async fn proxied_cluster() -> TestCluster {
    TestCluster::start_with(ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    })
    .await
    .expect("a proxied cluster starts")
}

async fn manager_with(seeds: Vec<String>) -> LockManager {
    LockManager::builder()
        .seeds(seeds)
        .namespace("lock:")
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("lock manager builds against the test cluster")
}

/// With the client side cut off from one primary, the lease on that shard
/// is reported lost (renewal cannot confirm it before it expires), while
/// the leases on the other two shards stay held and keep being renewed:
/// one silent shard does not hold up the others' renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_cut_from_the_client_loses_its_lease_and_the_others_are_renewed() {
    const TTL: Duration = Duration::from_secs(2);
    let cluster = proxied_cluster().await;
    let mgr = manager_with(cluster.seeds()).await;
    // One slot per primary: 0–5461, 5462–10922, 10923–16383.
    let slots = [0u16, 6000, 12000];
    let mut guards = Vec::new();
    for slot in slots {
        let guard = mgr
            .lock(key_in(slot, "cut"))
            .ttl(TTL)
            .acquire()
            .await
            .unwrap();
        guards.push(guard);
    }
    let first_valid: Vec<Instant> = guards.iter().map(|g| g.valid_until()).collect();
    let cut = cluster.primary_of_slot(slots[0]).await.unwrap();
    cluster.cut_client(&cut).unwrap();

    tokio::time::timeout(TTL * 3, guards[0].lost())
        .await
        .expect("the lease on the cut shard is reported lost");
    assert!(guards[0].is_lost());
    for (guard, first) in guards.iter().zip(&first_valid).skip(1) {
        assert!(!guard.is_lost());
        assert!(
            guard.valid_until() > *first,
            "a lease on a reachable shard was renewed meanwhile"
        );
        assert!(guard.valid_until() > Instant::now());
    }

    cluster.heal_all().unwrap();
    for guard in guards.into_iter().skip(1) {
        guard.release().await.unwrap();
    }
}

/// Split brain gives two holders at once, and fencing is what tells them
/// apart. Manager A holds K on primary P (replicated: acquired with WAIT
/// 1); then P is isolated from every other node while clients still reach
/// it, and A takes K2 on P right away — P still accepts writes, but the
/// write never reaches P's replica R. The majority side promotes R, where
/// manager B (seeded without P) takes K2 as well, while A still holds it:
/// its guard is not lost and its `valid_until` lies ahead. B's fencing
/// token is higher than A's. Then A's lease on K2 is reported lost, and
/// after the heal the cluster converges with P as R's replica.
///
/// Timing (node timeout 1 s, TTL 15 s): P refuses writes about 1 s after
/// the cut, R is promoted about 1.5–2.5 s after it, and B acquires right
/// then. A renews K2 only when a third of its TTL has passed (5 s after it
/// took it), so A cannot learn of B before B holds K2, and A's validity
/// (15 s) outlasts the promotion by far. The loss comes with that first
/// renewal once A's slot map names R (R holds K2 for B's token), or at the
/// latest when the 15 s run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_gives_two_holders_and_the_later_one_a_higher_fencing_token() {
    const TTL: Duration = Duration::from_secs(15);
    let cluster = proxied_cluster().await;
    let slot = 0;
    let p = cluster.primary_of_slot(slot).await.unwrap();
    let r = cluster.replica_of(&p).await.unwrap();
    let a = manager_with(cluster.seeds()).await;
    let (k, k2) = (key_in(slot, "k"), key_in(slot, "k2"));
    let held = a
        .lock(&k)
        .ttl(TTL)
        .fenced()
        .replicas(1)
        .acquire()
        .await
        .unwrap();

    cluster.isolate(&p).unwrap();
    let a_k2 = a.lock(&k2).ttl(TTL).fenced().acquire().await.unwrap();
    let a_token = a_k2.fencing_token().expect("a fenced lease");

    wait_until(SETTLE, "P's replica to be promoted", || async {
        cluster.primary_of_slot(slot).await.ok().as_deref() == Some(r.as_str())
    })
    .await;
    let b_seeds: Vec<String> = cluster
        .addrs()
        .iter()
        .zip(cluster.seeds())
        .filter(|(addr, _)| **addr != p)
        .map(|(_, seed)| seed)
        .collect();
    let b = manager_with(b_seeds).await;
    let b_k2 = b
        .lock(&k2)
        .ttl(TTL)
        .fenced()
        .acquire()
        .await
        .expect("B takes K2 on the promoted replica");
    let now = Instant::now();
    assert!(
        !a_k2.is_lost() && a_k2.valid_until() > now,
        "A still holds K2"
    );
    assert!(!b_k2.is_lost() && b_k2.valid_until() > now);
    let b_token = b_k2.fencing_token().expect("a fenced lease");
    assert!(
        b_token > a_token,
        "B's token {b_token:?} is above A's {a_token:?}"
    );

    tokio::time::timeout(TTL + Duration::from_secs(5), a_k2.lost())
        .await
        .expect("A's lease on K2 is reported lost");
    assert!(!b_k2.is_lost());

    cluster.heal_all().unwrap();
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
    assert_eq!(cluster.primary_of_slot(slot).await.unwrap(), r);
    assert_eq!(cluster.replica_of(&r).await.unwrap(), p);
    b_k2.release().await.unwrap();
    drop((held, a_k2));
}
