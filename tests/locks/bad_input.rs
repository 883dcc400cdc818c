//! Bad input is refused with `Error::InvalidArgument` naming what is wrong,
//! before anything is sent; an unreachable cluster is a typed error.

use std::future::Future;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use shardlock::testkit::TestCluster;
use shardlock::{Error, LockManager, LockRequest, Result};

/// Lock settings of the manager under test.
const MAX_TTL: Duration = Duration::from_secs(60);
const MAX_KEY_LEN: usize = 16;

/// Calls of the commands a lock operation sends (and of the commands its
/// scripts run), summed over every primary (`INFO commandstats`).
async fn lock_command_calls(cluster: &TestCluster) -> u64 {
    const LOCK_COMMANDS: [&str; 8] = [
        "set", "get", "eval", "evalsha", "del", "pexpire", "wait", "time",
    ];
    let mut calls = 0;
    for primary in cluster.primaries().await.unwrap() {
        let reply = cluster
            .command(&primary, redis::cmd("INFO").arg("commandstats"))
            .await
            .unwrap();
        let info: String = redis::from_redis_value(reply).unwrap();
        for line in info.lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            if LOCK_COMMANDS.contains(&name) {
                let n = stats
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .expect("calls=");
                calls += n.parse::<u64>().unwrap();
            }
        }
    }
    calls
}

/// Asserts `result` is InvalidArgument whose message contains every needle.
fn assert_invalid<T: std::fmt::Debug>(what: &str, result: Result<T>, needles: &[&str]) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{what}: {message:?} lacks {needle:?}"
                );
            }
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Both ways of sending `request` (acquire and try_acquire) refuse it.
async fn assert_request_invalid<F>(what: &str, request: F, needles: &[&str])
where
    F: Fn() -> LockRequest,
{
    assert_invalid(what, request().acquire().await, needles);
    assert_invalid(what, request().try_acquire().await, needles);
}

/// Runs `f` and checks it sent nothing: the manager made no attempt and no
/// primary ran a lock command.
async fn sends_nothing<Fut: Future<Output = ()>>(cluster: &TestCluster, mgr: &LockManager, f: Fut) {
    let attempts = mgr.client().stats().attempts;
    let calls = lock_command_calls(cluster).await;
    f.await;
    assert_eq!(
        mgr.client().stats().attempts,
        attempts,
        "attempts were sent"
    );
    assert_eq!(
        lock_command_calls(cluster).await,
        calls,
        "Redis ran lock commands"
    );
}

/// Empty and over-long keys, TTLs of zero, below three renewal intervals
/// (auto-renew) or above max_ttl, for acquire, try_acquire and extend, are
/// refused by name and nothing reaches Redis; the limits themselves pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_sending() {
    let cluster = TestCluster::start().await.unwrap();
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .max_ttl(MAX_TTL)
        .max_key_len(MAX_KEY_LEN)
        .build()
        .await
        .unwrap();
    // Not auto-renewed, so no renewal traffic moves the counters.
    let guard = mgr
        .lock("held")
        .auto_renew(false)
        .ttl(MAX_TTL)
        .acquire()
        .await
        .unwrap();
    let too_long = "k".repeat(MAX_KEY_LEN + 1);
    let ms = Duration::from_millis;

    sends_nothing(&cluster, &mgr, async {
        assert_request_invalid("empty key", || mgr.lock(""), &["key", "empty"]).await;
        assert_request_invalid(
            "empty key, fenced and waiting",
            || mgr.lock(b"").fenced().wait(ms(500)),
            &["key", "empty"],
        )
        .await;
        assert_request_invalid(
            "key above max_key_len",
            || mgr.lock(&too_long),
            &["key", "17 bytes", "max_key_len (16)"],
        )
        .await;
        assert_request_invalid(
            "ttl zero",
            || mgr.lock("k").ttl(Duration::ZERO),
            &["ttl 0ns", "three renewal intervals"],
        )
        .await;
        assert_request_invalid(
            "ttl zero without auto-renew",
            || mgr.lock("k").auto_renew(false).ttl(Duration::ZERO),
            &["ttl 0ns", "below 1ms"],
        )
        .await;
        assert_request_invalid(
            "ttl below three renewal intervals",
            || mgr.lock("k").ttl(ms(299)).fenced(),
            &["ttl 299ms", "below 300ms", "three renewal intervals"],
        )
        .await;
        assert_request_invalid(
            "ttl above max_ttl",
            || mgr.lock("k").ttl(MAX_TTL + ms(1)).replicas(1),
            &["ttl 60.001s", "max_ttl (60s)"],
        )
        .await;
        assert_invalid(
            "extend to zero",
            guard.extend(Duration::ZERO).await,
            &["ttl 0ns"],
        );
        assert_invalid(
            "extend above max_ttl",
            guard.extend(MAX_TTL * 2).await,
            &["max_ttl (60s)"],
        );
    })
    .await;
    assert!(!guard.is_lost(), "refused calls leave the lease alone");

    // The limits themselves are allowed.
    let at_limits = mgr
        .lock("k".repeat(MAX_KEY_LEN))
        .ttl(ms(300))
        .acquire()
        .await
        .unwrap();
    at_limits.extend(MAX_TTL).await.unwrap();
    at_limits.release().await.unwrap();
    guard.release().await.unwrap();
}

/// A listener on a free loopback port that speaks no Redis; `accepted`
/// tells whether anything connected to it.
struct Probe(TcpListener);

impl Probe {
    fn new() -> Probe {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Probe(listener)
    }

    fn seed(&self) -> String {
        format!("redis://{}", self.0.local_addr().unwrap())
    }

    fn accepted(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A namespace (or fence namespace) with braces, or a bad key-class
/// declaration, is refused by name before any connection is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lock_settings_are_refused_before_connecting() {
    let builder = |probe: &Probe| {
        LockManager::builder()
            .seeds([probe.seed()])
            .connect_timeout(Duration::from_millis(300))
            .response_timeout(Duration::from_millis(300))
    };
    for namespace in ["a{b}", "a{", "}"] {
        let probe = Probe::new();
        let built = builder(&probe).namespace(namespace).build().await;
        assert_invalid(namespace, built, &["namespace", namespace, "brace"]);
        assert!(!probe.accepted(), "{namespace}: a connection was opened");
    }
    let probe = Probe::new();
    let built = builder(&probe).fence_namespace("f{x}:").build().await;
    assert_invalid("fence namespace", built, &["fence_namespace", "brace"]);
    assert!(
        !probe.accepted(),
        "fence namespace: a connection was opened"
    );

    // Key classes: empty, empty name, duplicate.
    for (what, classes, needle) in [
        ("no classes", &[][..], "1 to 32"),
        ("empty class", &[""][..], "empty"),
        ("duplicate class", &["a", "a"][..], "twice"),
    ] {
        let probe = Probe::new();
        let built = builder(&probe).key_classes(classes, |_| "a").build().await;
        assert_invalid(what, built, &["key_classes", needle]);
        assert!(!probe.accepted(), "{what}: a connection was opened");
    }

    // The probe does see a connection when the settings are fine.
    let probe = Probe::new();
    let built = builder(&probe).namespace("ok:").build().await;
    assert!(built.is_err(), "the probe speaks no Redis");
    assert!(probe.accepted(), "a valid build connects to its seed");
}

/// A manager built against a port where nothing listens fails with
/// NoNodeReachable naming that seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_seed_is_no_node_reachable() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let built = LockManager::builder()
        .seeds([format!("redis://{addr}")])
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await;
    match built {
        Err(Error::NoNodeReachable(failures)) => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert_eq!(failures[0].addr, addr.to_string());
        }
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
}
