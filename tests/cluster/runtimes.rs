//! A client or lock manager outlives the tokio runtime it was built on:
//! its background workers (node batchers, the topology refresher, the
//! renewal task) and its connections are made again on the runtime of the
//! next call.

use std::time::Duration;

use redis::Value;
use shardlock::testkit::TestCluster;
use shardlock::{LockManager, key_slot};
use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::support::{client, key_in, wait_until};

/// A fresh runtime of the kind `#[tokio::test]` makes, for one phase.
fn runtime(multi_thread: bool) -> Runtime {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.worker_threads(2).enable_all().build().unwrap()
}

/// `PTTL key` on the node at `addr`, read without the client under test.
async fn pttl_on(cluster: &TestCluster, addr: &str, key: &str) -> i64 {
    match cluster.command(addr, redis::cmd("PTTL").arg(key)).await {
        Ok(Value::Int(ms)) => ms,
        other => panic!("PTTL {key} on {addr}: {other:?}"),
    }
}

/// A client built (and used) on one runtime keeps working on a second one
/// after the first is dropped: commands (auto-pipelined, so through the
/// node's batcher), a topology refresh and concurrent requests all succeed.
#[test]
fn client_works_on_a_later_runtime() {
    let harness = runtime(true);
    let cluster = harness.block_on(TestCluster::start()).unwrap();
    let first = runtime(false);
    let c = first.block_on(async {
        let c = client(&cluster).await;
        let key = key_in(7, "rt:first");
        let set = redis::cmd("SET").arg(&key).arg("1").clone();
        let ok: String = c.query(&key, set).await.unwrap();
        assert_eq!(ok, "OK");
        c
    });
    drop(first);

    let second = runtime(true);
    second.block_on(async {
        let key = key_in(7, "rt:second");
        let set = redis::cmd("SET").arg(&key).arg("2").clone();
        let ok: String = tokio::time::timeout(Duration::from_secs(20), c.query(&key, set))
            .await
            .expect("a call on the second runtime returns")
            .unwrap_or_else(|e| panic!("a call on the second runtime fails: {e}"));
        assert_eq!(ok, "OK");
        // Many at once: they go through the node's batching worker.
        let gets = (0..64).map(|i| {
            let c = c.clone();
            async move {
                let key = key_in(7, &format!("rt:many{i}"));
                c.query::<Option<String>>(&key, redis::cmd("GET").arg(&key).clone())
                    .await
            }
        });
        for r in futures::future::join_all(gets).await {
            assert_eq!(r.unwrap(), None);
        }
        c.refresh()
            .await
            .unwrap_or_else(|e| panic!("refresh on the second runtime: {e}"));
        c.hint_refresh().unwrap();
    });
    drop(second);
    drop(cluster);
}

/// A lock manager built on one runtime renews leases taken on a second one
/// after the first is dropped, and takes and releases locks there.
#[test]
fn lock_manager_renews_on_a_later_runtime() {
    let harness = runtime(true);
    let cluster = harness.block_on(TestCluster::start()).unwrap();
    let first = runtime(false);
    let mgr = first.block_on(async {
        let mgr = LockManager::builder()
            .seeds(cluster.seeds())
            .namespace("lock:")
            .request_timeout(Duration::from_secs(20))
            .build()
            .await
            .unwrap();
        let g = mgr.lock("rt:warm").acquire().await.unwrap();
        g.release().await.unwrap();
        mgr
    });
    drop(first);

    let second = runtime(true);
    let key = "rt:renewed";
    let full = format!("lock:{key}");
    let primary = harness
        .block_on(cluster.primary_of_slot(key_slot(full.as_bytes())))
        .unwrap();
    second.block_on(async {
        let ttl = Duration::from_millis(600);
        let guard = tokio::time::timeout(Duration::from_secs(20), mgr.lock(key).ttl(ttl).acquire())
            .await
            .expect("an acquire on the second runtime returns")
            .unwrap_or_else(|e| panic!("acquire on the second runtime: {e}"));
        // Renewed: the key's PTTL goes up again (a renewal ran), more than
        // once, and the guard is not lost.
        let (c, p, f) = (&cluster, primary.as_str(), full.as_str());
        let mut last = pttl_on(c, p, f).await;
        let mut renewals = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while renewals < 3 {
            assert!(
                Instant::now() < deadline,
                "the lease was not renewed 3 times"
            );
            let now = pttl_on(c, p, f).await;
            assert!(now > 0, "the lease expired: PTTL {now}");
            if now > last {
                renewals += 1;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!guard.is_lost());
        guard.release().await.unwrap();
        assert_eq!(pttl_on(c, p, f).await, -2, "released");
        // A dropped guard is released in the background by the renewal task.
        let dropped = mgr
            .lock(key)
            .ttl(Duration::from_secs(30))
            .acquire()
            .await
            .unwrap();
        drop(dropped);
        wait_until(
            Duration::from_secs(20),
            "the dropped guard's release",
            || async move { pttl_on(c, p, f).await == -2 },
        )
        .await;
    });
}

/// A guard taken on a runtime whose renewal task then dies with it is lost
/// at once (`is_lost()` right after the runtime is dropped, long before its
/// TTL runs out), and `lost()` awaited on another runtime resolves.
#[test]
fn leases_of_a_renewal_task_that_died_are_lost_at_once() {
    let harness = runtime(true);
    let cluster = harness.block_on(TestCluster::start()).unwrap();
    let ttl = Duration::from_secs(60);
    let first = runtime(false);
    let (mgr, guard) = first.block_on(async {
        let mgr = LockManager::builder()
            .seeds(cluster.seeds())
            .namespace("lock:")
            .request_timeout(Duration::from_secs(20))
            .build()
            .await
            .unwrap();
        let guard = mgr.lock("rt:orphaned").ttl(ttl).acquire().await.unwrap();
        (mgr, guard)
    });
    let guard = std::sync::Arc::new(guard);
    assert!(!guard.is_lost());
    let second = runtime(true);
    let waiter = {
        let guard = guard.clone();
        second.spawn(async move { guard.lost().await })
    };
    drop(first);
    assert!(
        guard.is_lost(),
        "the lease is not lost once its renewal task died with its runtime"
    );
    assert!(
        guard.valid_until() > Instant::now() + ttl / 2,
        "long before its TTL"
    );
    second.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("lost() resolves on the other runtime")
            .unwrap();
        // The manager works on the new runtime.
        let g = mgr.lock("rt:after").acquire().await.unwrap();
        g.release().await.unwrap();
    });
    drop(guard);
    drop(second);
}

/// A request made on one live runtime and queued in a node's batching
/// worker that runs on another, which then shuts down, is retried through
/// a new worker on its own runtime and succeeds: a stopped worker is not a
/// fatal error.
#[test]
fn requests_queued_in_a_worker_whose_runtime_stopped_are_retried() {
    let harness = runtime(true);
    let cluster = harness.block_on(TestCluster::start()).unwrap();
    let key = key_in(7, "rt:queued");
    let get = redis::cmd("GET").arg(&key).clone();
    // The node's batcher and connection start on `first`.
    let first = runtime(true);
    let c = first.block_on(async {
        let c = client(&cluster).await;
        let none: Option<String> = c.query(&key, get.clone()).await.unwrap();
        assert_eq!(none, None);
        c
    });
    let node = harness.block_on(cluster.primary_of_slot(7)).unwrap();
    cluster.pause(&node).unwrap();
    let second = runtime(true);
    let written = c.stats().writes;
    let queries = {
        let c = c.clone();
        second.spawn(async move {
            // The first goes out at once; the second, finding it
            // unanswered, is queued in the worker running on `first`.
            let gets = (0..2).map(|_| c.query::<Option<String>>(&key, get.clone()));
            futures::future::join_all(gets).await
        })
    };
    let c2 = &c;
    harness.block_on(wait_until(
        Duration::from_secs(10),
        "both requests written (one by the worker on the first runtime)",
        || async move { c2.stats().writes >= written + 2 },
    ));
    drop(first);
    cluster.resume(&node).unwrap();
    let results = second
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), queries).await })
        .expect("the requests return")
        .unwrap();
    for r in results {
        let value = r.unwrap_or_else(|e| panic!("a request queued in the stopped worker: {e}"));
        assert_eq!(value, None);
    }
    drop(second);
}

/// A guard dropped on a runtime that shuts down before its renewal task
/// ran is still released: the next renewal task (started by an acquire on
/// another runtime) takes the release over, long before the key's TTL.
#[test]
fn a_release_left_by_a_stopped_renewal_task_is_taken_over() {
    let harness = runtime(true);
    let cluster = harness.block_on(TestCluster::start()).unwrap();
    let key = "rt:left";
    let full = format!("lock:{key}");
    let primary = harness
        .block_on(cluster.primary_of_slot(key_slot(full.as_bytes())))
        .unwrap();
    let first = runtime(false);
    let mgr = first.block_on(async {
        LockManager::builder()
            .seeds(cluster.seeds())
            .namespace("lock:")
            .request_timeout(Duration::from_secs(20))
            .build()
            .await
            .unwrap()
    });
    let guard = first.block_on(async {
        mgr.lock(key)
            .ttl(Duration::from_secs(60))
            .acquire()
            .await
            .unwrap()
    });
    // The release message is queued, and the current-thread runtime ends
    // before its renewal task is polled again.
    first.block_on(async move { drop(guard) });
    drop(first);
    let (c, p, f) = (&cluster, primary.as_str(), full.as_str());
    assert!(
        harness.block_on(pttl_on(c, p, f)) > 0,
        "the key is still held when the first runtime is gone"
    );
    let second = runtime(true);
    second.block_on(async {
        // Registers a lease: starts a renewal task on this runtime.
        let other = mgr.lock("rt:left:other").acquire().await.unwrap();
        wait_until(
            Duration::from_secs(5),
            "the release left by the stopped renewal task",
            || async move { pttl_on(c, p, f).await == -2 },
        )
        .await;
        other.release().await.unwrap();
    });
    drop(second);
}
