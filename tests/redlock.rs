//! Redlock against real independent deployments: five standalone
//! redis-servers (and, once, three small clusters), started and stopped by
//! the test kit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use shardlock::testkit::{ClusterSpec, StandaloneServer, TestCluster};
use shardlock::{Error, LockManager, RedlockManager};
use tokio::time::Instant;

#[path = "common/wait.rs"]
mod wait;

const INSTANCE_TIMEOUT: Duration = Duration::from_millis(500);

async fn servers(n: usize) -> Vec<StandaloneServer> {
    join_all((0..n).map(|_| StandaloneServer::start()))
        .await
        .into_iter()
        .map(|s| s.expect("redis-server starts"))
        .collect()
}

async fn manager_for(seed: String) -> LockManager {
    LockManager::builder()
        .seeds([seed])
        .namespace("rl:")
        .build()
        .await
        .expect("manager builds")
}

async fn redlock(servers: &[StandaloneServer]) -> RedlockManager {
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    redlock_over(managers)
}

fn redlock_over(managers: Vec<LockManager>) -> RedlockManager {
    RedlockManager::builder()
        .instances(managers)
        .instance_timeout(INSTANCE_TIMEOUT)
        .build()
        .expect("redlock builds")
}

/// Whether `key`'s lock key exists on `server` (asked directly).
async fn exists(server: &StandaloneServer, key: &str) -> bool {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("EXISTS")
        .arg(format!("rl:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// 16 tasks on two managers take the same key 10 times each: never two
/// holders at once, every acquisition counted, and each lease held on a
/// majority while it was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_under_contention() {
    let servers = servers(5).await;
    let (a, b) = (redlock(&servers).await, redlock(&servers).await);
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = (0..16).map(|i| {
        let mgr = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (inside, overlaps, done) = (inside.clone(), overlaps.clone(), done.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                let guard = mgr
                    .lock("hot")
                    .ttl(Duration::from_secs(5))
                    .auto_renew(false)
                    .wait(Duration::from_secs(60))
                    .acquire()
                    .await
                    .expect("acquires within the wait");
                assert!(guard.instances_held() >= 3, "{guard:?}");
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(!guard.is_lost());
                guard.release().await.expect("released while valid");
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    for task in join_all(tasks).await {
        task.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(done.load(Ordering::SeqCst), 160);
    for server in &servers {
        assert!(!exists(server, "hot").await, "released everywhere");
    }
}

/// With two of five instances killed the lock still works (three hold
/// it), and the dead instances cost one attempt per operation rather than
/// retries until the instance timeout; with a third killed, acquire fails
/// with `NoQuorum` and leaves nothing held on the two that are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dead_instances_are_tolerated_three_are_not() {
    let servers = servers(5).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = redlock_over(managers.clone());
    servers[0].kill();
    servers[1].kill();
    let dead_attempts = || managers[0].client().stats().attempts;
    let before = dead_attempts();
    for _ in 0..5 {
        let guard = mgr
            .lock("k")
            .try_acquire()
            .await
            .unwrap()
            .expect("3 of 5 hold it");
        assert_eq!(guard.instances_held(), 3);
        assert!(mgr.lock("k").try_acquire().await.unwrap().is_none(), "held");
        guard.release().await.unwrap();
    }
    // Per cycle: the acquire, the contended acquire and its clean-up, the
    // release: one attempt each on the dead instance, no retries.
    let spent = dead_attempts() - before;
    assert!(
        spent <= 20,
        "{spent} attempts on a dead instance for 5 cycles"
    );

    servers[2].kill();
    let err = mgr.lock("k").try_acquire().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoQuorum {
                acquired: 2,
                needed: 3,
                unavailable: 3
            }
        ),
        "{err:?}"
    );
    let err = mgr
        .lock("k")
        .wait(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoQuorum { .. }), "{err:?}");
    for server in &servers[3..] {
        assert!(!exists(server, "k").await, "given back after no quorum");
    }
}

/// A holder's lease on an instance that is paused (SIGSTOP) past the TTL:
/// the holder's validity runs out, `lost()` says so, and only then can
/// another client take the lock (on the four live instances); the old
/// holder's late release does not touch the new holder's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_instance_does_not_give_two_holders() {
    let servers = servers(5).await;
    let (a, b) = (redlock(&servers).await, redlock(&servers).await);
    let ttl = Duration::from_millis(1500);
    let first = a
        .lock("p")
        .ttl(ttl)
        .auto_renew(false)
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    assert_eq!(first.instances_held(), 5);
    servers[0].pause().unwrap();
    // While the first lease is valid, nobody else gets it.
    assert!(b.lock("p").ttl(ttl).try_acquire().await.unwrap().is_none());
    tokio::time::timeout(Duration::from_secs(10), first.lost())
        .await
        .expect("the unrenewed lease's validity runs out");
    let first_deadline = first.validity_deadline();
    let second = b
        .lock("p")
        .ttl(Duration::from_secs(10))
        .auto_renew(false)
        .wait(Duration::from_secs(10))
        .acquire()
        .await
        .expect("taken on the four live instances");
    let taken = Instant::now();
    assert!(first_deadline <= taken, "validity windows do not overlap");
    assert_eq!(second.instances_held(), 4);
    servers[0].resume().unwrap();
    assert!(matches!(first.release().await, Err(Error::NotHeld)));
    assert!(!second.is_lost());
    for server in &servers[1..] {
        assert!(
            exists(server, "p").await,
            "the new holder's lease is intact"
        );
    }
    second.release().await.unwrap();
}

/// With auto-renewal the validity deadline moves forward as the instances
/// renew; when no instance answers (all stopped), `lost()` resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_extends_validity_until_it_stops() {
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = redlock_over(managers.clone());
    let ttl = Duration::from_millis(900);
    let guard = mgr.lock("r").ttl(ttl).try_acquire().await.unwrap().unwrap();
    let first = guard.validity_deadline();
    wait::wait_until(
        Duration::from_secs(10),
        "a renewal to move the deadline",
        || async { guard.validity_deadline() > first + ttl },
    )
    .await;
    assert!(!guard.is_lost());
    // Every instance stops answering (SIGSTOP): renewal reaches none.
    for s in &servers {
        s.pause().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("lost once renewal reaches no instance");
    assert!(guard.is_lost());
    for s in &servers {
        s.resume().unwrap();
    }
}

/// `extend` needs a majority: with 2 of 3 instances alive it works, with
/// 1 of 3 it is refused and the lease is no longer trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_needs_a_majority() {
    let servers = servers(3).await;
    let mgr = redlock(&servers).await;
    let guard = mgr
        .lock("e")
        .ttl(Duration::from_secs(2))
        .auto_renew(false)
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    let before = guard.validity_deadline();
    servers[0].kill();
    guard.extend(Duration::from_secs(20)).await.unwrap();
    assert!(guard.validity_deadline() > before + Duration::from_secs(10));
    servers[1].kill();
    assert!(matches!(
        guard.extend(Duration::from_secs(20)).await,
        Err(Error::NotHeld)
    ));
}

/// Three independent small clusters (3 primaries each) work as Redlock
/// instances: one holder at a time, released on all three; one cluster
/// reached through two different seeds is refused as two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_independent_clusters() {
    let spec = || ClusterSpec {
        primaries: 3,
        replicas_per_primary: 0,
        ..ClusterSpec::default()
    };
    let clusters: Vec<TestCluster> = join_all((0..3).map(|_| TestCluster::start_with(spec())))
        .await
        .into_iter()
        .map(|c| c.expect("cluster starts"))
        .collect();
    let managers = join_all(clusters.iter().map(|c| manager_for(c.seeds()[0].clone()))).await;
    let twice = vec![
        managers[0].clone(),
        manager_for(clusters[0].seeds()[1].clone()).await,
        managers[1].clone(),
    ];
    assert_same_deployment(
        RedlockManager::builder().instances(twice).build(),
        "address",
    );
    let mgr = redlock_over(managers);
    for key in ["a", "b", "{x}c"] {
        let guard = mgr.lock(key).try_acquire().await.unwrap().expect("free");
        assert_eq!(guard.instances_held(), 3);
        assert!(mgr.lock(key).try_acquire().await.unwrap().is_none());
        guard.release().await.unwrap();
        let again = mgr
            .lock(key)
            .try_acquire()
            .await
            .unwrap()
            .expect("free again");
        again.release().await.unwrap();
    }
}

/// Asserts a Redlock build was refused for instances 0 and 1 reaching one
/// deployment, found by `how`.
fn assert_same_deployment(built: shardlock::Result<RedlockManager>, how: &str) {
    match built {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains("instances 0 and 1"), "{m}");
            assert!(m.contains("same deployment") && m.contains(how), "{m}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// One deployment is never counted twice: the same manager twice, two
/// managers for one server under two names (`127.0.0.1:p`, `localhost:p`),
/// or with the same seed, are refused; three distinct servers build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_instances_are_refused() {
    let servers = servers(3).await;
    let m0 = manager_for(servers[0].url()).await;
    let m1 = manager_for(servers[1].url()).await;
    let m2 = manager_for(servers[2].url()).await;
    let port = servers[0].addr().rsplit_once(':').unwrap().1.to_owned();
    let alias = manager_for(format!("redis://localhost:{port}")).await;
    let same_seed = manager_for(servers[0].url()).await;
    let cases = [
        ([m0.clone(), m0.clone(), m1.clone()], "address"),
        ([m0.clone(), alias, m1.clone()], "server id"),
        ([m0.clone(), same_seed, m1.clone()], "address"),
    ];
    for (instances, how) in cases {
        assert_same_deployment(RedlockManager::builder().instances(instances).build(), how);
    }
    let distinct = RedlockManager::builder()
        .instances([m0, m1, m2])
        .build()
        .unwrap();
    assert_eq!(distinct.instances(), 3);
    let guard = distinct
        .lock("dup")
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    assert_eq!(guard.instances_held(), 3);
    guard.release().await.unwrap();
}

/// Bad settings and requests are refused with `InvalidArgument` before
/// anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let build = |n: usize| {
        RedlockManager::builder()
            .instances(managers[..n].to_vec())
            .build()
    };
    for n in [0, 1, 2] {
        assert!(
            matches!(build(n), Err(Error::InvalidArgument(_))),
            "{n} instances"
        );
    }
    let mut four = managers.clone();
    four.push(managers[0].clone());
    assert!(matches!(
        RedlockManager::builder().instances(four).build(),
        Err(Error::InvalidArgument(_))
    ));
    for factor in [-0.1, 0.5, f64::NAN] {
        assert!(matches!(
            RedlockManager::builder()
                .instances(managers.clone())
                .drift_factor(factor)
                .build(),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        RedlockManager::builder()
            .instances(managers.clone())
            .instance_timeout(Duration::ZERO)
            .build(),
        Err(Error::InvalidArgument(_))
    ));
    let mgr = build(3).unwrap();
    let sent_before: u64 = managers.iter().map(|m| m.client().stats().attempts).sum();
    for (what, result) in [
        ("empty key", mgr.lock("").try_acquire().await.map(|_| ())),
        (
            "zero ttl",
            mgr.lock("k")
                .ttl(Duration::ZERO)
                .try_acquire()
                .await
                .map(|_| ()),
        ),
        (
            "ttl within the instance timeout",
            mgr.lock("k")
                .ttl(Duration::from_millis(50))
                .auto_renew(false)
                .try_acquire()
                .await
                .map(|_| ()),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{what}: {result:?}"
        );
    }
    let sent_after: u64 = managers.iter().map(|m| m.client().stats().attempts).sum();
    assert_eq!(sent_before, sent_after, "nothing was sent");
}

/// Redlock's durations: `instance_timeout` of zero, `Duration::MAX` or not
/// below the instances' max_ttl is refused at build; a request TTL or an
/// extend of zero, `Duration::MAX` or above max_ttl is `InvalidArgument`
/// (never a panic, never `NotHeld`); any wait works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duration_is_checked() {
    let servers = servers(3).await;
    let max = Duration::from_secs(60);
    let managers = join_all(servers.iter().map(|s| {
        LockManager::builder()
            .seeds([s.url()])
            .namespace("rl:")
            .max_ttl(max)
            .build()
    }))
    .await
    .into_iter()
    .map(|m| m.unwrap())
    .collect::<Vec<_>>();
    let builder = || RedlockManager::builder().instances(managers.clone());
    for (timeout, needle) in [
        (Duration::ZERO, "above zero"),
        (Duration::MAX, "max_ttl (60s)"),
        (max, "max_ttl (60s)"),
    ] {
        match builder().instance_timeout(timeout).build() {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("instance_timeout({timeout:?}): {other:?}"),
        }
    }
    builder()
        .instance_timeout(max - Duration::from_millis(1))
        .build()
        .unwrap();
    let mgr = builder()
        .instance_timeout(INSTANCE_TIMEOUT)
        .build()
        .unwrap();
    let held = mgr
        .lock("held")
        .ttl(max)
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    for ttl in [Duration::ZERO, Duration::MAX, max + Duration::from_nanos(1)] {
        for (what, result) in [
            (
                "try_acquire",
                mgr.lock("k").ttl(ttl).try_acquire().await.map(|_| ()),
            ),
            (
                "acquire",
                mgr.lock("k")
                    .ttl(ttl)
                    .wait(Duration::MAX)
                    .acquire()
                    .await
                    .map(|_| ()),
            ),
            ("extend", held.extend(ttl).await),
        ] {
            assert!(
                matches!(result, Err(Error::InvalidArgument(_))),
                "{what} ttl({ttl:?}): {result:?}"
            );
        }
    }
    assert!(!held.is_lost(), "refused extends leave the lease alone");
    held.extend(max).await.unwrap();
    for wait in [Duration::ZERO, Duration::MAX] {
        let guard = mgr.lock("free").wait(wait).acquire().await.unwrap();
        guard.release().await.unwrap();
    }
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        mgr.lock("held").wait(Duration::MAX).acquire(),
    )
    .await;
    assert!(
        waiting.is_err(),
        "wait(MAX) on a held lock ended: {waiting:?}"
    );
    held.release().await.unwrap();
}

/// Leases handed to the background release by all of `managers`.
fn background_releases(managers: &[LockManager]) -> u64 {
    managers
        .iter()
        .map(LockManager::background_releases_total)
        .sum()
}

/// With one of three instances killed, cycles of acquire and release leave
/// nothing for the background release (the dead instance's acquire was
/// refused before anything was written: no orphan), and cycles of acquire
/// and drop hand over exactly the two live instances' leases per cycle
/// (none for the dead instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_fills_no_background_queue() {
    const CYCLES: u64 = 10;
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = redlock_over(managers.clone());
    servers[0].kill();
    // The dead instance's connection is noticed broken once.
    drop(mgr.lock("warm").try_acquire().await.unwrap());
    let before = background_releases(&managers);
    for _ in 0..CYCLES {
        let guard = mgr.lock("k").try_acquire().await.unwrap().expect("2 of 3");
        assert_eq!(guard.instances_held(), 2);
        guard.release().await.unwrap();
    }
    assert_eq!(
        background_releases(&managers) - before,
        0,
        "released cycles queued background releases"
    );
    let before = background_releases(&managers);
    for _ in 0..CYCLES {
        let guard = mgr.lock("k").try_acquire().await.unwrap().expect("2 of 3");
        drop(guard);
        // Each drop's releases are done before the next acquire.
        wait::wait_until(Duration::from_secs(5), "the drop's releases", || async {
            !exists(&servers[1], "k").await && !exists(&servers[2], "k").await
        })
        .await;
    }
    assert_eq!(
        background_releases(&managers) - before,
        2 * CYCLES,
        "dropped cycles: one background release per live instance"
    );
}

/// An instance guard reported lost (its key deleted behind its back) is
/// released once when the Redlock guard is dropped, not twice (by its own
/// drop and again by token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_instance_is_released_once_on_drop() {
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = redlock_over(managers.clone());
    let guard = mgr
        .lock("gone")
        .ttl(Duration::from_secs(1))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    let mut conn = redis::Client::open(servers[0].url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("rl:gone")
        .query_async(&mut conn)
        .await
        .unwrap();
    wait::wait_until(
        Duration::from_secs(5),
        "renewal to find the key gone",
        || async { guard.instances_held() == 2 },
    )
    .await;
    let before: Vec<u64> = managers
        .iter()
        .map(LockManager::background_releases_total)
        .collect();
    drop(guard);
    let after: Vec<u64> = managers
        .iter()
        .map(LockManager::background_releases_total)
        .collect();
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_eq!(a - b, 1, "instance {i}: one background release");
    }
}

/// A release on an instance that does not answer within the instance
/// timeout (stopped) is handed to that instance's background release, so
/// the key does not outlive the release by its TTL when the instance
/// answers again; instances that answered queue nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_times_out_is_finished_in_the_background() {
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = redlock_over(managers.clone());
    let guard = mgr
        .lock("slow")
        .ttl(Duration::from_secs(30))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    assert_eq!(guard.instances_held(), 3);
    let before = background_releases(&managers);
    servers[0].pause().unwrap();
    let released = guard.release().await;
    let handed_over = background_releases(&managers) - before;
    servers[0].resume().unwrap();
    released.unwrap();
    assert_eq!(
        handed_over, 1,
        "the stopped instance's release goes to the background, the others' do not"
    );
    wait::wait_until(
        Duration::from_secs(5),
        "the stopped instance's key to be released",
        || async { !exists(&servers[0], "slow").await },
    )
    .await;
    assert!(!exists(&servers[1], "slow").await && !exists(&servers[2], "slow").await);
}

/// Once `is_lost()` is true it stays true: every instance stopped until the
/// Redlock deadline (validity less a wide drift allowance) passed, then an
/// instance renewal landing within the allowance moves the deadline ahead
/// again, and the guard still reports the lease lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_lost_stays_true() {
    let servers = servers(3).await;
    let managers = join_all(servers.iter().map(|s| manager_for(s.url()))).await;
    let mgr = RedlockManager::builder()
        .instances(managers.clone())
        .instance_timeout(INSTANCE_TIMEOUT)
        .drift_factor(0.4)
        .build()
        .unwrap();
    let guard = mgr
        .lock("sticky")
        .ttl(Duration::from_secs(3))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    // Every instance stops answering (SIGSTOP) until the Redlock deadline
    // has passed, then answers again while the keys (3 s TTL) still live.
    for s in &servers {
        s.pause().unwrap();
    }
    wait::wait_until(
        Duration::from_secs(5),
        "the Redlock deadline to pass",
        || async { guard.is_lost() },
    )
    .await;
    for s in &servers {
        s.resume().unwrap();
    }
    wait::wait_until(
        Duration::from_secs(5),
        "an instance renewal to move the deadline ahead",
        || async { guard.validity_deadline() > tokio::time::Instant::now() },
    )
    .await;
    assert!(guard.is_lost(), "is_lost() turned false again");
    tokio::time::timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("lost() resolves at once");
}
