//! Lock benchmarks on an embedded local six-node cluster:
//!
//! 1. acquire+release cycles per second (try mode, uniform keys), next to
//!    `redis-benchmark --cluster -t set` with the same number of clients on
//!    the same cluster in the same run;
//! 2. client memory per held auto-renewed lease: resident memory of this
//!    process (`Rss` of /proc/self/smaps_rollup, in the kernel's own units,
//!    so no page size is assumed) before acquiring `--leases` leases and
//!    again once every one of them has been renewed `--rounds` times, per
//!    lease, minus the key bytes. The figure right after acquisition, before
//!    any renewal round, is printed too.
//!
//! `cargo bench --features testkit --bench locks -- [--seconds S]
//! [--workers W] [--keys K] [--leases N] [--lease-ttl-seconds T]
//! [--rounds R]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shardlock::LockManager;
use shardlock::testkit::TestCluster;
use tokio::time::Instant;

struct Options {
    seconds: u64,
    workers: usize,
    keys: u64,
    leases: usize,
    /// TTL of the held leases; renewal runs every third of it.
    lease_ttl: Duration,
    /// Renewal rounds every held lease goes through before memory is read.
    rounds: u32,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 10,
        workers: 50,
        keys: 100_000,
        leases: 1_000_000,
        lease_ttl: Duration::from_secs(30),
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seconds" => o.seconds = value().expect("--seconds N"),
            "--workers" => o.workers = value().expect("--workers N") as usize,
            "--keys" => o.keys = value().expect("--keys N"),
            "--leases" => o.leases = value().expect("--leases N") as usize,
            "--lease-ttl-seconds" => {
                o.lease_ttl = Duration::from_secs(value().expect("--lease-ttl-seconds T"))
            }
            "--rounds" => o.rounds = value().expect("--rounds R") as u32,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cluster = runtime
        .block_on(TestCluster::start())
        .expect("start a local cluster");
    let seeds = cluster.seeds();

    // 1. Cycle rate, on a multi-thread runtime (two workers on this
    //    machine) and on a current-thread runtime, each with its own manager.
    let multi = runtime.block_on(cycle_rate(&seeds, &o));
    report_cycles("multi-thread runtime", multi, &o);
    let current = {
        let seeds = seeds.clone();
        let (seconds, workers, keys, lease_ttl) = (o.seconds, o.workers, o.keys, o.lease_ttl);
        std::thread::spawn(move || {
            let o = Options {
                seconds,
                workers,
                keys,
                leases: 0,
                lease_ttl,
                rounds: 0,
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(cycle_rate(&seeds, &o))
        })
        .join()
        .expect("the current-thread phase")
    };
    report_cycles("current-thread runtime", current, &o);
    let rate = multi.0 as f64 / multi.2;
    runtime.block_on(memory_and_baseline(
        &cluster,
        &seeds,
        &o,
        rate,
        current.0 as f64 / current.2,
    ));
}

/// (cycles, contended tries, seconds) of acquire+release cycles.
async fn cycle_rate(seeds: &[String], o: &Options) -> (u64, u64, f64) {
    let mgr = LockManager::builder()
        .seeds(seeds)
        .build()
        .await
        .expect("connect");
    let cycles = Arc::new(AtomicU64::new(0));
    let contended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..o.workers {
        let (mgr, cycles, contended, stop) =
            (mgr.clone(), cycles.clone(), contended.clone(), stop.clone());
        let keys = o.keys;
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(w as u64);
            while !stop.load(Relaxed) {
                let key = format!("bench:{}", rng.u64(..keys));
                match mgr.lock(&key).auto_renew(false).try_acquire().await {
                    Ok(Some(guard)) => {
                        guard.release().await.expect("release");
                        cycles.fetch_add(1, Relaxed);
                    }
                    Ok(None) => {
                        contended.fetch_add(1, Relaxed);
                    }
                    Err(e) => panic!("acquire failed: {e}"),
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Relaxed);
    while tasks.join_next().await.is_some() {}
    (
        cycles.load(Relaxed),
        contended.load(Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

fn report_cycles(runtime: &str, (cycles, contended, elapsed): (u64, u64, f64), o: &Options) {
    println!(
        "acquire+release, {runtime}: {cycles} cycles in {elapsed:.1} s = {:.0} cycles/s ({contended} contended tries), {} workers, {} keys",
        cycles as f64 / elapsed,
        o.workers,
        o.keys
    );
}

async fn memory_and_baseline(
    cluster: &TestCluster,
    seeds: &[String],
    o: &Options,
    rate: f64,
    current_rate: f64,
) {
    let seed = cluster.addrs()[0].clone();
    match shardlock::testkit::redis_benchmark_set(
        &seed,
        o.workers,
        o.keys,
        (rate * o.seconds as f64).max(50_000.0) as u64,
    ) {
        Ok(set_rate) => println!(
            "redis-benchmark --cluster -t set -c {}: {set_rate:.0} SET/s; cycles/s ÷ SET/s = {:.2} (multi-thread), {:.2} (current-thread)",
            o.workers,
            rate / set_rate,
            current_rate / set_rate
        ),
        Err(e) => println!("redis-benchmark unavailable: {e}"),
    }

    // 2. Memory per held lease.
    let mgr = LockManager::builder()
        .seeds(seeds)
        .build()
        .await
        .expect("connect");
    let before = resident_bytes();
    let ttl = o.lease_ttl;
    let mut guards = Vec::with_capacity(o.leases);
    let mut key_bytes = 0usize;
    let started = Instant::now();
    let mut batch = tokio::task::JoinSet::new();
    for chunk in 0..o.leases.div_ceil(10_000) {
        let mgr = mgr.clone();
        let first = chunk * 10_000;
        let last = (first + 10_000).min(o.leases);
        batch.spawn(async move {
            let mut held = Vec::with_capacity(last - first);
            for i in first..last {
                let key = format!("held:{i}");
                let guard = mgr
                    .lock(&key)
                    .ttl(ttl)
                    .acquire()
                    .await
                    .expect("acquire a fresh key");
                held.push(guard);
            }
            held
        });
        // Bounded concurrency: at most 16 chunks in flight.
        if batch.len() >= 16 {
            let held = batch.join_next().await.unwrap().unwrap();
            key_bytes += held.iter().map(|g| g.key().len()).sum::<usize>();
            guards.extend(held);
        }
    }
    while let Some(held) = batch.join_next().await {
        let held = held.unwrap();
        key_bytes += held.iter().map(|g| g.key().len()).sum::<usize>();
        guards.extend(held);
    }
    let acquired_in = started.elapsed();
    let unrenewed = resident_bytes();
    // A round is complete when every lease is confirmed past the latest
    // validity any lease had when the round began: each has then been
    // renewed by a request sent after that moment.
    for _ in 0..o.rounds {
        let latest = guards.iter().map(|g| g.valid_until()).max();
        let give_up = Instant::now() + ttl.saturating_mul(2).min(Duration::from_secs(3600));
        loop {
            assert!(
                guards.iter().all(|g| !g.is_lost()),
                "a lease was lost while held"
            );
            if guards.iter().all(|g| Some(g.valid_until()) > latest) {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "a renewal round did not complete within two TTLs"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let after = resident_bytes();
    let n = guards.len();
    let per = |resident: u64| resident.saturating_sub(before) as f64 / n as f64;
    let per_lease = per(after);
    let key_avg = key_bytes as f64 / n as f64;
    let beyond = |per_lease: f64| per_lease - key_avg - "shardlock:lock:".len() as f64;
    println!(
        "memory: {n} auto-renewed leases of ttl {ttl:?} held (acquired in {:.1} s), after {} renewal rounds of each: resident +{:.1} MiB = {per_lease:.0} bytes per lease, {:.0} beyond the key (keys average {key_avg:.1} bytes plus the {}-byte namespace); before any round: {:.0} bytes per lease, {:.0} beyond the key",
        acquired_in.as_secs_f64(),
        o.rounds,
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        beyond(per_lease),
        "shardlock:lock:".len(),
        per(unrenewed),
        beyond(per(unrenewed)),
    );
    drop(guards);
}

/// Resident set size of this process in bytes: `Rss` of
/// /proc/self/smaps_rollup, which the kernel gives in kB whatever the page
/// size.
fn resident_bytes() -> u64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup")
        .expect("/proc/self/smaps_rollup (Linux 4.14 or later)");
    rollup
        .lines()
        .find_map(|line| {
            let kb = line.strip_prefix("Rss:")?.trim().strip_suffix("kB")?;
            kb.trim().parse::<u64>().ok()
        })
        .expect("an Rss line in kB in /proc/self/smaps_rollup")
        * 1024
}
