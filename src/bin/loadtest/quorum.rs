//! `--redlock N`: the same workload, for the same time, with Redlock over N
//! embedded standalone servers, reported beside the single-cluster run so
//! that the cost of a quorum is read off one invocation.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use shardlock::testkit::StandaloneServer;
use shardlock::{LockManager, RedlockManager};

use crate::Failure;
use crate::args::Args;
use crate::cpu;
use crate::report::ms;
use crate::workload::{KeyChooser, NAMESPACE, Shared};

/// Runs the Redlock phase, prints its lines and returns its JSON object;
/// `single` is the single-cluster report to compare with.
pub(crate) async fn run(args: &Args, n: usize, single: &Value) -> Result<Value, Failure> {
    eprintln!("starting {n} standalone servers for the Redlock phase");
    let servers: Vec<StandaloneServer> = join_all((0..n).map(|_| StandaloneServer::start()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::Run(format!("cannot start the Redlock servers: {e}")))?;
    let mut managers = Vec::with_capacity(n);
    for server in &servers {
        let manager = LockManager::builder()
            .seeds([server.url()])
            .namespace(NAMESPACE)
            .auto_pipeline(!args.no_auto_pipeline)
            .build()
            .await
            .map_err(|e| Failure::Run(format!("cannot reach {}: {e}", server.addr())))?;
        managers.push(manager);
    }
    let redlock = RedlockManager::builder()
        .instances(managers.clone())
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let keys = KeyChooser::new(args.keys, args.distribution).map_err(Failure::Usage)?;

    let server_before = server_cpu(&servers).await;
    let cpu_before = cpu::process_cpu();
    let shared = Shared::start(managers[0].clone(), Some(redlock), keys, args);
    let start = shared.start;
    let mut workers = shared.spawn_workers();
    let mut kills = args.redlock_chaos.clone();
    kills.sort_by_key(|c| c.at);
    let mut killed = Vec::new();
    for (i, kill) in kills.iter().enumerate() {
        tokio::time::sleep_until(start + kill.at).await;
        servers[i].kill();
        let at_s = (tokio::time::Instant::now() - start).as_secs_f64();
        println!(
            "redlock chaos: kill of {} at {at_s:.1} s",
            servers[i].addr()
        );
        killed.push(json!({ "node": servers[i].addr(), "at_s": at_s }));
    }
    tokio::time::sleep_until(shared.end).await;
    shared.stop.store(true, Relaxed);
    let grace = args.ttl.max(Duration::from_secs(5));
    if tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        workers.abort_all();
    }
    let duration_s = start.elapsed().as_secs_f64();
    let cpu_after = cpu::process_cpu();
    let server_after = server_cpu(&servers).await;

    let t = shared.total();
    let cycles_per_sec = t.cycles as f64 / duration_s;
    let per_cycle = |seconds: Option<f64>| {
        seconds
            .filter(|_| t.cycles > 0)
            .map(|s| s * 1e6 / t.cycles as f64)
    };
    let client_cpu = per_cycle(
        cpu_before
            .zip(cpu_after)
            .map(|(b, a)| a.own.saturating_sub(b.own).as_secs_f64()),
    );
    let server_cpu = per_cycle(cpu_between(&server_before, &server_after));
    let violations = shared.safety.violations();
    let report = json!({
        "instances": n,
        "quorum": n / 2 + 1,
        "cycles": t.cycles,
        "cycles_per_sec": cycles_per_sec,
        "failed_acquires": t.failed_acquires,
        "errors": t.errors(),
        "errors_by_kind": t.errors,
        "lost_leases": t.lost_leases,
        "violations": violations,
        "contention_rate": if t.acquired + t.failed_acquires > 0 {
            t.failed_acquires as f64 / (t.acquired + t.failed_acquires) as f64
        } else {
            0.0
        },
        "acquire_p50_ms": ms(&t.acquire, 0.5),
        "acquire_p90_ms": ms(&t.acquire, 0.9),
        "acquire_p99_ms": ms(&t.acquire, 0.99),
        "acquire_p999_ms": ms(&t.acquire, 0.999),
        "acquire_max_ms": t.acquire.max() as f64 / 1e3,
        "hold_p50_ms": ms(&t.hold, 0.5),
        "hold_p99_ms": ms(&t.hold, 0.99),
        "cycle_p50_ms": ms(&t.cycle, 0.5),
        "cycle_p99_ms": ms(&t.cycle, 0.99),
        "client_cpu_us_per_cycle": client_cpu,
        "server_cpu_us_per_cycle": server_cpu,
        "duration_s": duration_s,
        "killed": killed,
    });
    let ratio = |field: &str| match (report[field].as_f64(), single[field].as_f64()) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}", ours / theirs),
        _ => "n/a".into(),
    };
    let opt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
    println!();
    println!(
        "redlock:     {n} standalone instances (quorum {}), same workload for {duration_s:.1} s",
        n / 2 + 1
    );
    println!(
        "cycles:      {} = {cycles_per_sec:.0} cycles/s ({} × the single-cluster lock); {} failed acquires, {} errors, {} lost leases",
        t.cycles,
        ratio("cycles_per_sec"),
        t.failed_acquires,
        t.errors(),
        t.lost_leases
    );
    println!(
        "acquire ms:  p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (p50 {} and p99 {} × single-cluster)",
        ms(&t.acquire, 0.5),
        ms(&t.acquire, 0.9),
        ms(&t.acquire, 0.99),
        ms(&t.acquire, 0.999),
        t.acquire.max() as f64 / 1e3,
        ratio("acquire_p50_ms"),
        ratio("acquire_p99_ms"),
    );
    println!(
        "cycle ms:    p50 {:.3} p99 {:.3}; hold ms: p50 {:.3} p99 {:.3}; contention {:.2}%",
        ms(&t.cycle, 0.5),
        ms(&t.cycle, 0.99),
        ms(&t.hold, 0.5),
        ms(&t.hold, 0.99),
        report["contention_rate"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "CPU µs/cycle: client {}, servers {} ({} and {} × single-cluster)",
        opt(client_cpu),
        opt(server_cpu),
        ratio("client_cpu_us_per_cycle"),
        ratio("server_cpu_us_per_cycle")
    );
    println!("redlock violations: {violations}");
    drop(shared);
    drop(managers);
    drop(servers);
    Ok(report)
}

/// `used_cpu_sys + used_cpu_user` of each server; `None` for one that does
/// not answer (killed).
async fn server_cpu(servers: &[StandaloneServer]) -> Vec<Option<Duration>> {
    join_all(servers.iter().map(|server| async move {
        let client = redis::Client::open(server.url()).ok()?;
        let connect = client.get_multiplexed_async_connection();
        let mut conn = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .ok()?
            .ok()?;
        let text: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(Duration::from_secs_f64(cpu::info_cpu_seconds(&text)))
    }))
    .await
}

/// CPU the servers that answered both times spent in between (a killed
/// server's share is unknown and left out).
fn cpu_between(before: &[Option<Duration>], after: &[Option<Duration>]) -> Option<f64> {
    let spent: Vec<f64> = before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?).as_secs_f64()))
        .collect();
    (!spent.is_empty()).then(|| spent.iter().sum())
}
