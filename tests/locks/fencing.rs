//! Fencing tokens: one counter per slot, floored by the server's clock in
//! microseconds, so the tokens of one resource strictly increase, also
//! across a manual failover and a kill -9 of the primary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{LockManager, slot_tag};
use tokio::time::Instant;

use crate::support::{key_in, manager, wait_until};

/// Bound for waits that normally take a failover.
const PATIENCE: Duration = Duration::from_secs(60);
/// Acquisitions to see before the fault, and again after it.
const ACQUISITIONS: usize = 200;

/// The server's clock (`TIME`) in microseconds, read on the node at `addr`.
async fn server_time_us(cluster: &TestCluster, addr: &str) -> u64 {
    let reply = cluster.command(addr, &redis::cmd("TIME")).await.unwrap();
    let Value::Array(parts) = reply else {
        panic!("TIME: {reply:?}");
    };
    let num = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).unwrap().parse::<u64>().unwrap(),
        other => panic!("TIME part: {other:?}"),
    };
    num(&parts[0]) * 1_000_000 + num(&parts[1])
}

/// The fencing counter of `slot` (default fence namespace).
fn counter_key(slot: u16) -> String {
    format!("shardlock:fence:{{{}}}", slot_tag(slot))
}

/// Fencing tokens come from one counter per slot, floored by the server's
/// clock: two keys of one slot get increasing tokens, each at least the
/// server's `TIME` in µs read just before; a counter ahead of the clock is
/// followed (counter + 1), and one set back (as a failover may lose it) is
/// overtaken by the clock, so the resource's next token still grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_are_per_slot_counters_floored_by_server_time() {
    const SLOT: u16 = 7000;
    let cluster = TestCluster::start().await.unwrap();
    let mgr = manager(&cluster).await;
    let node = cluster.primary_of_slot(SLOT).await.unwrap();
    let counter = counter_key(SLOT);
    let get_counter = || async {
        match cluster
            .command(&node, redis::cmd("GET").arg(&counter))
            .await
            .unwrap()
        {
            Value::BulkString(v) => String::from_utf8(v).unwrap().parse::<u64>().unwrap(),
            other => panic!("GET {counter}: {other:?}"),
        }
    };
    let fenced = |key: String| {
        let mgr = &mgr;
        async move {
            let guard = mgr.lock(&key).fenced().acquire().await.unwrap();
            let token = guard.fencing_token().expect("fenced").get();
            (guard, token)
        }
    };
    let (a, b) = (key_in(SLOT, "a"), key_in(SLOT, "b"));

    let before_a = server_time_us(&cluster, &node).await;
    let (guard_a, token_a) = fenced(a.clone()).await;
    assert!(token_a >= before_a, "token {token_a} < TIME {before_a}");
    let before_b = server_time_us(&cluster, &node).await;
    let (guard_b, token_b) = fenced(b.clone()).await;
    assert!(token_b > token_a, "{token_b} after {token_a} in one slot");
    assert!(token_b >= before_b, "token {token_b} < TIME {before_b}");
    assert_eq!(get_counter().await, token_b, "the slot's counter");

    // Another slot has its own counter; this one is left alone.
    let before_c = server_time_us(&cluster, &node).await;
    let (guard_c, token_c) = fenced(key_in(SLOT + 1, "c")).await;
    assert!(token_c >= before_c);
    assert_eq!(get_counter().await, token_b);
    assert_eq!(get_counter_of(&cluster, &node, SLOT + 1).await, token_c);

    // A counter ahead of the clock is followed: counter + 1.
    let ahead = server_time_us(&cluster, &node).await + 3_600_000_000;
    let set = |value: u64| redis::cmd("SET").arg(&counter).arg(value).clone();
    cluster.command(&node, &set(ahead)).await.unwrap();
    guard_a.release().await.unwrap();
    let (guard_a, token) = fenced(a.clone()).await;
    assert_eq!(token, ahead + 1);

    // A counter set back (lost at a failover) is overtaken by the clock:
    // b's next token still exceeds every earlier token of b.
    cluster.command(&node, &set(5)).await.unwrap();
    guard_b.release().await.unwrap();
    let before = server_time_us(&cluster, &node).await;
    let (guard_b, token) = fenced(b.clone()).await;
    assert!(
        token >= before && token > token_b,
        "{token} after {token_b}"
    );
    println!(
        "slot {SLOT}: a {token_a}, b {token_b} (TIME before {before_b}); slot {}: c {token_c}; \
         counter ahead {ahead} -> a {}; counter reset to 5 -> b {token}",
        SLOT + 1,
        ahead + 1,
    );
    for g in [guard_a, guard_b, guard_c] {
        g.release().await.unwrap();
    }
}

/// The fencing counter of `slot`, read on the node at `addr`.
async fn get_counter_of(cluster: &TestCluster, addr: &str, slot: u16) -> u64 {
    match cluster
        .command(addr, redis::cmd("GET").arg(counter_key(slot)))
        .await
        .unwrap()
    {
        Value::BulkString(v) => String::from_utf8(v).unwrap().parse().unwrap(),
        other => panic!("counter of slot {slot}: {other:?}"),
    }
}

/// The shard under fault serves this slot (and the next two).
const FAULT_SLOT: u16 = 100;

/// Every fencing token handed out, per key in acquisition order, recorded
/// while the lock is held (so the lock itself orders the records of a key).
#[derive(Default)]
struct Ledger {
    tokens: Mutex<HashMap<String, Vec<(u64, Instant)>>>,
    /// Acquisition times on the shard, in order.
    times: Mutex<Vec<Instant>>,
    acquire_errors: Mutex<Vec<String>>,
    release_errors: Mutex<Vec<String>>,
}

impl Ledger {
    fn record(&self, key: &str, token: u64) {
        let now = Instant::now();
        self.tokens
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push((token, now));
        self.times.lock().unwrap().push(now);
    }

    fn count(&self) -> usize {
        self.times.lock().unwrap().len()
    }
}

/// Takes, records and releases the locks of `keys` in turn until `stop`.
async fn fenced_worker(
    mgr: LockManager,
    keys: Arc<Vec<String>>,
    first: usize,
    stop: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
) {
    let mut i = first;
    while !stop.load(Relaxed) {
        let key = &keys[i % keys.len()];
        i += 1;
        let acquired = mgr
            .lock(key)
            .fenced()
            .ttl(Duration::from_secs(2))
            .wait(PATIENCE)
            .acquire()
            .await;
        match acquired {
            Ok(guard) => {
                ledger.record(key, guard.fencing_token().expect("fenced").get());
                if let Err(e) = guard.release().await {
                    ledger
                        .release_errors
                        .lock()
                        .unwrap()
                        .push(format!("{key}: {e}"));
                }
            }
            Err(e) => ledger
                .acquire_errors
                .lock()
                .unwrap()
                .push(format!("{key}: {e}")),
        }
    }
}

/// Which fault `fenced_acquisitions_through` injects.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Failover,
    Kill,
}

/// Runs 8 tasks on two managers taking fenced locks on keys of the shard
/// of `FAULT_SLOT` (two in one slot, two in other slots), injects `fault`
/// mid-run, and checks that every key's tokens strictly increase.
async fn fenced_acquisitions_through(fault: Fault) {
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(1),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    let primary = cluster.primary_of_slot(FAULT_SLOT).await.unwrap();
    let keys = Arc::new(vec![
        key_in(FAULT_SLOT, "f0"),
        key_in(FAULT_SLOT, "f1"),
        key_in(FAULT_SLOT + 1, "f2"),
        key_in(FAULT_SLOT + 2, "f3"),
    ]);
    for slot in [FAULT_SLOT + 1, FAULT_SLOT + 2] {
        assert_eq!(cluster.primary_of_slot(slot).await.unwrap(), primary);
    }
    let managers = [manager(&cluster).await, manager(&cluster).await];
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        tasks.spawn(fenced_worker(
            managers[i % 2].clone(),
            keys.clone(),
            i,
            stop.clone(),
            ledger.clone(),
        ));
    }
    let l = &ledger;
    wait_until(PATIENCE, "acquisitions before the fault", || async move {
        l.count() >= ACQUISITIONS
    })
    .await;

    let fault_at = Instant::now();
    let promoted = match fault {
        Fault::Failover => cluster.failover(&primary).await.unwrap(),
        Fault::Kill => {
            cluster.kill(&primary).unwrap();
            let (c, p) = (&cluster, &primary);
            wait_until(PATIENCE, "a replica to take over", || async move {
                matches!(c.primary_of_slot(FAULT_SLOT).await, Ok(n) if n != *p)
            })
            .await;
            cluster.primary_of_slot(FAULT_SLOT).await.unwrap()
        }
    };
    let fault_took = fault_at.elapsed();
    let at_recovery = ledger.count();
    wait_until(PATIENCE, "acquisitions after the fault", || async move {
        l.count() >= at_recovery + ACQUISITIONS
    })
    .await;
    stop.store(true, Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let times = ledger.times.lock().unwrap().clone();
    let before = times.iter().filter(|t| **t < fault_at).count();
    let longest_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "{fault:?} {primary} -> {promoted} ({fault_took:?}): {before} fenced acquisitions \
         before the fault, {} after; longest gap between acquisitions {longest_gap:?}",
        times.len() - before
    );
    let tokens = ledger.tokens.lock().unwrap();
    for key in keys.iter() {
        let seq = &tokens[key];
        let last_before = seq.iter().rev().find(|(_, t)| *t < fault_at);
        let first_after = seq.iter().find(|(_, t)| *t >= fault_at);
        println!(
            "  {key}: {} tokens, {} .. {}; last before the fault {:?}, first after {:?}",
            seq.len(),
            seq[0].0,
            seq[seq.len() - 1].0,
            last_before.map(|p| p.0),
            first_after.map(|p| p.0),
        );
        for (i, w) in seq.windows(2).enumerate() {
            assert!(
                w[1].0 > w[0].0,
                "{key}: token #{} {} is not above token #{i} {} ({:?} and {:?} after the fault)",
                i + 1,
                w[1].0,
                w[0].0,
                w[0].1.checked_duration_since(fault_at),
                w[1].1.checked_duration_since(fault_at),
            );
        }
    }
    let release_errors = ledger.release_errors.lock().unwrap();
    println!(
        "  release errors: {} {:?}",
        release_errors.len(),
        release_errors.iter().take(5).collect::<Vec<_>>()
    );
    let acquire_errors = ledger.acquire_errors.lock().unwrap();
    assert!(acquire_errors.is_empty(), "{acquire_errors:?}");
}

/// Fencing tokens of each key strictly increase across a manual failover
/// (`CLUSTER FAILOVER`) that happens while 8 tasks take and release them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_across_manual_failover() {
    fenced_acquisitions_through(Fault::Failover).await;
}

/// Fencing tokens of each key strictly increase across a kill -9 of the
/// primary (node timeout 1 s) while 8 tasks take and release them: the
/// promoted replica may have lost the last counter updates, and its clock
/// floor keeps the tokens above them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_across_primary_kill() {
    fenced_acquisitions_through(Fault::Kill).await;
}
