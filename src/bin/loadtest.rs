//! shardlock-loadtest: drives routed commands against a Redis Cluster (an
//! embedded local six-node cluster by default) and compares the rate with
//! `redis-benchmark` on the same cluster in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use shardlock::testkit::TestCluster;
use shardlock::{Client, Request, key_slot};
use tokio::time::Instant;

/// Load test for shardlock's routing core.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent tasks sending requests.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Number of distinct keys (spread over all slots).
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

#[derive(Debug)]
struct Report {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.concurrency == 0 || args.keys == 0 || args.seconds == 0 {
        return Err("--concurrency, --keys and --seconds must be above zero".into());
    }
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
    let client = Client::builder().seeds(&seeds).build().await?;
    eprintln!(
        "cluster: {} shards; driving SET for {} s with {} tasks over {} keys",
        client.topology().shards().len(),
        args.seconds,
        args.concurrency,
        args.keys
    );

    let report = drive(&client, &args).await;
    let rate = report.ops as f64 / report.elapsed.as_secs_f64();
    println!(
        "shardlock SET: {} ops in {:.1} s = {:.0} ops/s, {} errors",
        report.ops,
        report.elapsed.as_secs_f64(),
        rate,
        report.errors
    );
    println!(
        "  latency µs: p50 {} p99 {} p99.9 {} max {}",
        report.latency.value_at_quantile(0.50),
        report.latency.value_at_quantile(0.99),
        report.latency.value_at_quantile(0.999),
        report.latency.max()
    );
    println!("  routing: {:?}", client.stats());

    if !args.no_baseline {
        let first = seeds[0].trim_start_matches("redis://").to_owned();
        let requests = (rate * args.seconds as f64).max(10_000.0) as u64;
        match shardlock::testkit::redis_benchmark_set(&first, args.concurrency, args.keys, requests)
        {
            Ok(baseline) => println!(
                "redis-benchmark --cluster SET: {baseline:.0} ops/s; shardlock/redis-benchmark = {:.2}",
                rate / baseline
            ),
            Err(e) => println!("redis-benchmark baseline unavailable: {e}"),
        }
    }
    drop(client);
    drop(embedded);
    Ok(())
}

async fn drive(client: &Client, args: &Args) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.concurrency {
        let (client, stop, keys) = (client.clone(), stop.clone(), args.keys);
        tasks.spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("3 significant digits is valid");
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut rng = fastrand::Rng::with_seed(task as u64);
            while !stop.load(Relaxed) {
                let key = format!("key:{}", rng.u64(..keys));
                let request = Request::cmd(redis::cmd("SET").arg(&key).arg("x").clone());
                let t = Instant::now();
                match client.execute(key_slot(key.as_bytes()), &request).await {
                    Ok(_) => ops += 1,
                    Err(_) => errors += 1,
                }
                let _ = latency.record(t.elapsed().as_micros() as u64);
            }
            (ops, errors, latency)
        });
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Relaxed);
    let mut report = Report {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).expect("valid"),
    };
    while let Some(done) = tasks.join_next().await {
        let (ops, errors, latency) = done.expect("load task panicked");
        report.ops += ops;
        report.errors += errors;
        let _ = report.latency.add(latency);
    }
    report.elapsed = started.elapsed();
    report
}
