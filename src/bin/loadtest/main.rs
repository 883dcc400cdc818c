//! shardlock-loadtest: drives lock cycles (acquire, then release) against a
//! Redis Cluster — an embedded local six-node cluster by default — checks
//! that no two workers ever held one key at once, and compares the rate with
//! `redis-benchmark` on the same cluster in the same run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use shardlock::LockManager;
use shardlock::testkit::{TestCluster, redis_benchmark_set};
use tokio::time::Instant;

/// Load test for shardlock: acquire+release cycles on many keys.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent workers, each running one cycle at a time.
    #[arg(long, default_value_t = 50)]
    workers: usize,
    /// Number of distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Seed node(s) of an existing cluster; without it a local six-node
    /// cluster is started and removed afterwards.
    #[arg(long)]
    seed: Vec<String>,
    /// Skip the redis-benchmark comparison.
    #[arg(long)]
    no_baseline: bool,
}

/// Keys held right now, by this process's workers: a second holder of one
/// key is a violation of mutual exclusion.
struct Holders {
    shards: Vec<Mutex<HashSet<u64>>>,
    violations: AtomicU64,
}

impl Holders {
    fn new() -> Holders {
        Holders {
            shards: (0..64).map(|_| Mutex::new(HashSet::new())).collect(),
            violations: AtomicU64::new(0),
        }
    }

    fn enter(&self, key: u64) {
        let mut held = self.shards[key as usize % 64].lock().unwrap();
        if !held.insert(key) {
            self.violations.fetch_add(1, Relaxed);
        }
    }

    fn leave(&self, key: u64) {
        self.shards[key as usize % 64].lock().unwrap().remove(&key);
    }
}

struct Tally {
    cycles: u64,
    contended: u64,
    errors: u64,
    acquire: Histogram<u64>,
    cycle: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            cycles: 0,
            contended: 0,
            errors: 0,
            acquire: Histogram::new(3).expect("3 significant digits is valid"),
            cycle: Histogram::new(3).expect("3 significant digits is valid"),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.cycles += other.cycles;
        self.contended += other.contended;
        self.errors += other.errors;
        let _ = self.acquire.add(other.acquire);
        let _ = self.cycle.add(other.cycle);
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.workers == 0 || args.keys == 0 || args.seconds == 0 {
        eprintln!("error: --workers, --keys and --seconds must be above zero");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let embedded = if args.seed.is_empty() {
        eprintln!("starting a local cluster: 3 primaries + 3 replicas");
        Some(TestCluster::start().await?)
    } else {
        None
    };
    let seeds = match &embedded {
        Some(cluster) => cluster.seeds(),
        None => args.seed.clone(),
    };
    let mgr = LockManager::builder().seeds(&seeds).build().await?;
    eprintln!(
        "cluster: {} shards; {} workers, {} keys, {} s of acquire+release cycles (try mode)",
        mgr.client().topology().shards().len(),
        args.workers,
        args.keys,
        args.seconds
    );

    let holders = Arc::new(Holders::new());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.workers {
        let (mgr, holders, stop, keys) = (mgr.clone(), holders.clone(), stop.clone(), args.keys);
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut rng = fastrand::Rng::with_seed(worker as u64);
            while !stop.load(Relaxed) {
                let n = rng.u64(..keys);
                let key = format!("load:{n}");
                let t = Instant::now();
                match mgr.lock(&key).auto_renew(false).try_acquire().await {
                    Ok(Some(guard)) => {
                        let _ = tally.acquire.record(t.elapsed().as_micros() as u64);
                        // Held from here until just before the release is
                        // sent; the yield lets other workers run meanwhile.
                        holders.enter(n);
                        tokio::task::yield_now().await;
                        holders.leave(n);
                        match guard.release().await {
                            Ok(()) => {
                                tally.cycles += 1;
                                let _ = tally.cycle.record(t.elapsed().as_micros() as u64);
                            }
                            Err(_) => tally.errors += 1,
                        }
                    }
                    Ok(None) => tally.contended += 1,
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        });
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Relaxed);
    let mut total = Tally::new();
    while let Some(done) = tasks.join_next().await {
        total.merge(done?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = total.cycles as f64 / elapsed;

    println!(
        "cycles: {} in {elapsed:.1} s = {rate:.0} cycles/s; contended tries {}; errors {}",
        total.cycles, total.contended, total.errors
    );
    println!(
        "acquire µs: p50 {} p99 {} p99.9 {} max {}",
        total.acquire.value_at_quantile(0.50),
        total.acquire.value_at_quantile(0.99),
        total.acquire.value_at_quantile(0.999),
        total.acquire.max()
    );
    println!(
        "cycle µs:   p50 {} p99 {} p99.9 {} max {}",
        total.cycle.value_at_quantile(0.50),
        total.cycle.value_at_quantile(0.99),
        total.cycle.value_at_quantile(0.999),
        total.cycle.max()
    );
    println!("routing: {:?}", mgr.client().stats());
    println!("violations: {}", holders.violations.load(Relaxed));

    if !args.no_baseline {
        let first = seeds[0].trim_start_matches("redis://").to_owned();
        let first = first.rsplit('@').next().unwrap_or(&first).to_owned();
        let requests = (rate * args.seconds as f64).max(10_000.0) as u64;
        match redis_benchmark_set(&first, args.workers, args.keys, requests) {
            Ok(baseline) => println!(
                "redis-benchmark --cluster -t set -c {}: {baseline:.0} SET/s; cycles/s ÷ SET/s = {:.2}",
                args.workers,
                rate / baseline
            ),
            Err(e) => println!("redis-benchmark baseline unavailable: {e}"),
        }
    }
    drop(mgr);
    drop(embedded);
    Ok(())
}
