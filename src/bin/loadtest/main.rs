//! shardlock-loadtest: drives lock cycles (acquire, hold, release) against
//! a Redis Cluster — an embedded local six-node cluster by default — checks
//! that no two workers ever held one key at once (and, fenced, that tokens
//! only grow), injects faults on request, and compares with
//! `redis-benchmark` on the same cluster in the same run.
//!
//! Layout: `args.rs` (options and their parsers), `workload.rs` (workers,
//! key choice, tallies), `safety.rs` (the mutual-exclusion check), `cpu.rs`
//! (process and server CPU, command counts), `raw.rs` (redis-benchmark),
//! `progress.rs` (the live line), `report.rs` (human and JSON report),
//! `plot.rs` (the SVG of throughput and latency over time).
//!
//! Exit status: 0 after a report, 2 when the options or the environment are
//! wrong (one line on stderr says what), 1 when the run itself failed.

#![recursion_limit = "256"]

mod args;
mod cpu;
mod plot;
mod progress;
mod quorum;
mod raw;
mod report;
mod safety;
mod workload;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use clap::Parser;
use shardlock::LockManager;
use shardlock::testkit::{TestCluster, TestkitError};
use tokio::time::Instant;

use crate::args::{Args, ChaosKind, Mode, RuntimeKind};
use crate::report::{ChaosOutcome, Measured};
use crate::workload::{GapTracker, KeyChooser, NAMESPACE, Shared, key_slot_of};

/// Why the run stopped without a report.
enum Failure {
    /// The options or the environment are wrong (exit status 2).
    Usage(String),
    /// Something failed while running (exit status 1).
    Run(String),
}

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // clap's own message is several lines; its first says what is wrong.
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            std::process::exit(2);
        }
    };
    let mut builder = match args.runtime {
        RuntimeKind::Multi => tokio::runtime::Builder::new_multi_thread(),
        RuntimeKind::Current => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => {}
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
        Err(Failure::Run(message)) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let keys = KeyChooser::new(args.keys, args.distribution).map_err(Failure::Usage)?;
    if !args.seeds.is_empty() && !args.chaos.is_empty() {
        return Err(Failure::Usage(
            "--chaos works only on the embedded cluster (drop --seeds)".into(),
        ));
    }
    if let Some(chaos) = args.chaos.iter().find(|c| c.at >= args.duration) {
        return Err(Failure::Usage(format!(
            "--chaos {}@{:?} is not before the end of --duration {:?}",
            chaos.kind, chaos.at, args.duration
        )));
    }

    if args.redlock.is_none() && !args.redlock_chaos.is_empty() {
        return Err(Failure::Usage("--redlock-chaos needs --redlock N".into()));
    }
    if let Some(n) = args.redlock {
        if n < 3 || n.is_multiple_of(2) {
            return Err(Failure::Usage(format!(
                "--redlock {n}: Redlock needs an odd number of instances, at least 3"
            )));
        }
        if let Some(c) = args
            .redlock_chaos
            .iter()
            .find(|c| c.kind != ChaosKind::Kill || c.at >= args.duration)
        {
            return Err(Failure::Usage(format!(
                "--redlock-chaos {}@{:?}: only kill, before the end of --duration",
                c.kind, c.at
            )));
        }
        if args.redlock_chaos.len() >= n {
            return Err(Failure::Usage(format!(
                "--redlock-chaos: {} kills for {n} instances",
                args.redlock_chaos.len()
            )));
        }
        if matches!(args.mode, Mode::Fenced | Mode::Many(_)) {
            return Err(Failure::Usage(format!(
                "--redlock works with --mode try or wait:<d>, not {}",
                args.mode
            )));
        }
    }
    if let Some(addr) = args.metrics_addr {
        shardlock::prometheus::install(addr).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let cluster = if args.seeds.is_empty() {
        eprintln!("starting a local cluster: 3 primaries + 3 replicas");
        Some(TestCluster::start().await.map_err(|e| match e {
            TestkitError::RedisServerNotFound { .. } => Failure::Usage(e.to_string()),
            e => Failure::Run(format!("cannot start the local cluster: {e}")),
        })?)
    } else {
        None
    };
    let seeds = match &cluster {
        Some(cluster) => cluster.seeds(),
        None => args.seeds.clone(),
    };
    if let Some(addr) = args.metrics_addr {
        eprintln!("metrics: http://{addr}/metrics");
    }
    let hot_keys = (args.keys / 100).max(1);
    let mgr = LockManager::builder()
        .seeds(&seeds)
        .namespace(NAMESPACE)
        .auto_pipeline(!args.no_auto_pipeline)
        .key_classes(&["hot", "cold"], move |key| {
            match workload::key_number(key) {
                Some(n) if n < hot_keys => "hot",
                _ => "cold",
            }
        })
        .build()
        .await
        .map_err(|e| {
            let message = format!("cannot reach the cluster at {}: {e}", seeds.join(","));
            match cluster {
                None => Failure::Usage(message),
                Some(_) => Failure::Run(message),
            }
        })?;
    let shards = mgr.client().topology().shards().len();
    eprintln!(
        "cluster: {shards} shards; {} workers, {} keys, mode {}, {:?} of load",
        args.workers, args.keys, args.mode, args.duration
    );

    let server_before = match &cluster {
        Some(c) => cpu::server_counters(c).await,
        None => None,
    };
    let routing_before = mgr.client().stats();
    let cpu_before = cpu::process_cpu();
    let shared = Shared::start(mgr.clone(), None, keys, &args);
    let start = shared.start;
    let mut workers = shared.spawn_workers();
    let progress = progress::Progress::start(shared.clone());

    let mut chaos_outcomes = Vec::new();
    let mut events = args.chaos.clone();
    events.sort_by_key(|c| c.at);
    let mut trackers = Vec::new();
    if let Some(cluster) = &cluster {
        for event in &events {
            tokio::time::sleep_until(start + event.at).await;
            let (outcome, tracker) = inject(cluster, &shared, event.kind, start).await;
            progress.println(&format!(
                "chaos: {} of {} at {:.1} s{}",
                outcome.what,
                outcome.node,
                outcome.at_s,
                outcome
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" failed: {e}"))
            ));
            chaos_outcomes.push(outcome);
            trackers.push(tracker);
        }
    }
    tokio::time::sleep_until(shared.end).await;
    shared.stop.store(true, Relaxed);
    // A worker stuck in a long wait or hold gets a little time to finish.
    let grace = args.ttl.max(Duration::from_secs(5));
    let joined = tokio::time::timeout(grace, async {
        while let Some(done) = workers.join_next().await {
            if let Err(e) = done {
                return Err(Failure::Run(format!("a worker failed: {e}")));
            }
        }
        Ok(())
    })
    .await;
    let duration_s = start.elapsed().as_secs_f64();
    let cpu_after = cpu::process_cpu();
    progress.finish();
    match joined {
        Ok(result) => result?,
        Err(_) => workers.abort_all(),
    }
    let routing_after = mgr.client().stats();
    let server_after = match &cluster {
        Some(c) => cpu::server_counters(c).await,
        None => None,
    };
    let ended = Instant::now();
    for (outcome, tracker) in chaos_outcomes.iter_mut().zip(&trackers) {
        outcome.unavailable_s = tracker.as_ref().map(|t| t.close(ended).as_secs_f64());
    }

    let total = shared.total();
    let timeline = shared.timeline();
    let raw = if args.compare_raw {
        eprintln!("running redis-benchmark on the same cluster");
        let first = seeds[0].trim_start_matches("redis://");
        let addr = first.rsplit('@').next().unwrap_or(first);
        raw::compare(addr, args.workers, args.keys, cluster.as_ref()).await
    } else {
        Vec::new()
    };
    let mut routing = routing_after;
    routing.attempts -= routing_before.attempts;
    routing.writes -= routing_before.writes;
    routing.moved -= routing_before.moved;
    routing.ask -= routing_before.ask;
    routing.retryable_errors -= routing_before.retryable_errors;
    routing.refreshes -= routing_before.refreshes;
    routing.refresh_failures -= routing_before.refresh_failures;
    let plot_path = plot::path(&args);
    if let Some(path) = &plot_path {
        plot::write(path, &args, shards, &timeline, &chaos_outcomes)
            .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
    }
    let measured = Measured {
        args: &args,
        shards,
        embedded: cluster.is_some(),
        total: &total,
        duration_s,
        overlaps: shared.safety.overlaps(),
        token_regressions: shared.safety.token_regressions(),
        client_cpu_s: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| a.own.saturating_sub(b.own).as_secs_f64()),
        server_cpu_s: server_before
            .zip(server_after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
        server_commands: server_before
            .zip(server_after)
            .map(|(b, a)| a.commands.saturating_sub(b.commands)),
        routing,
        raw,
        chaos: chaos_outcomes,
        plot: plot_path.as_deref(),
    };
    let mut json = report::to_json(&measured);
    report::print_human(&measured, &json);
    if let Some(n) = args.redlock {
        let redlock = quorum::run(&args, n, &json).await?;
        json["redlock"] = redlock;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json).expect("a JSON value serialises");
        std::fs::write(path, text + "\n")
            .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
    }
    drop(shared);
    drop(mgr);
    drop(cluster);
    Ok(())
}

/// Injects one fault on the shard that serves key 0, and starts watching
/// that shard's slots for the longest gap without a successful acquire.
async fn inject(
    cluster: &TestCluster,
    shared: &Shared,
    kind: ChaosKind,
    start: Instant,
) -> (ChaosOutcome, Option<Arc<GapTracker>>) {
    let slot = key_slot_of(0);
    let at = Instant::now();
    let mut outcome = ChaosOutcome {
        what: kind.to_string(),
        at_s: (at - start).as_secs_f64(),
        node: String::new(),
        unavailable_s: None,
        error: None,
    };
    let primary = match cluster.primary_of_slot(slot).await {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return (outcome, None);
        }
    };
    outcome.node = primary.clone();
    // The slots the fault can make unavailable: all of the primary's for a
    // failover or kill, the one moved slot for a migration.
    let mut slots = vec![false; shardlock::SLOT_COUNT as usize];
    match kind {
        ChaosKind::Migrate => slots[slot as usize] = true,
        ChaosKind::Failover | ChaosKind::Kill => {
            let topology = shared.mgr.client().topology();
            for s in 0..shardlock::SLOT_COUNT {
                if topology.primary_of_slot(s).map(|n| n.addr().as_ref()) == Some(primary.as_str())
                {
                    slots[s as usize] = true;
                }
            }
        }
    }
    let tracker = Arc::new(GapTracker::new(slots, at));
    shared
        .gaps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(tracker.clone());
    shared.watching_gaps.store(true, Relaxed);
    let result = match kind {
        ChaosKind::Failover => cluster.failover(&primary).await.map(|_| ()),
        ChaosKind::Kill => cluster.kill(&primary),
        ChaosKind::Migrate => match cluster.primaries().await {
            Ok(primaries) => match primaries.into_iter().find(|p| *p != primary) {
                Some(target) => cluster.migrate_slot(slot, &target).await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        outcome.error = Some(e.to_string());
    }
    (outcome, Some(tracker))
}
