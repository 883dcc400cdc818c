//! shardlock-loadtest: drives lock cycles (acquire, hold, release) against
//! a Redis Cluster — an embedded local six-node cluster by default — checks
//! that no two workers ever held one key at once (and, fenced, that tokens
//! only grow), injects faults on request, and compares with
//! `redis-benchmark` on the same cluster in the same run. With
//! `--processes N` the workers run in N client processes; with
//! `--resource` every holder writes to a fenced protected resource and an
//! outside observer checks the events of all processes.
//!
//! Layout: `args.rs` (options and their parsers), `workload.rs` (workers,
//! key choice, tallies), `safety.rs` (the in-process mutual-exclusion
//! check), `observer.rs` (the I/O-free checker of leases, writes, fault
//! windows and leftovers), `resource.rs` (the protected resource and the
//! shared clock), `fenced_write.lua` (its compare-and-set), `procs.rs`
//! (client processes: spawning, waiting, results files, merging),
//! `chaos.rs` (fault injection), `leftovers.rs` (the lock keys left after
//! the run), `cpu.rs` (process and server CPU, command counts), `raw.rs`
//! (redis-benchmark), `progress.rs` (the live line), `report.rs` (human
//! and JSON report), `plot.rs` (the SVG of throughput and latency over
//! time).
//!
//! Exit status: 0 after a report, 2 when the options or the environment are
//! wrong (one line on stderr says what), 1 when the run itself failed — a
//! client process failed, or the observer saw a stale write accepted
//! (unless `--expect-unsafe`); the report is written first.

#![recursion_limit = "256"]

mod args;
mod chaos;
mod cpu;
mod leftovers;
mod observer;
mod plot;
mod procs;
mod progress;
mod quorum;
mod raw;
mod report;
mod resource;
mod safety;
mod workload;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use shardlock::LockManager;
use shardlock::testkit::{StandaloneServer, TestCluster, TestkitError};
use tokio::time::Instant;

use crate::args::{Args, ChaosKind, Hold, Mode, RuntimeKind};
use crate::observer::FaultWindow;
use crate::report::{Measured, Observed};
use crate::resource::{Resource, now_ns};
use crate::workload::{KeyChooser, NAMESPACE, Placement, Shared};

/// Why the run stopped without a report.
enum Failure {
    /// The options or the environment are wrong (exit status 2).
    Usage(String),
    /// Something failed while running (exit status 1).
    Run(String),
}

fn main() {
    let parsed = Args::command()
        .try_get_matches()
        .and_then(|m| Ok((Args::from_arg_matches(&m)?, m)));
    let args = match parsed {
        Ok((mut args, matches)) => {
            // `--resource` works for `--hold` (5 ms) unless told otherwise.
            let hold_given =
                matches.value_source("hold") == Some(clap::parser::ValueSource::CommandLine);
            if args.resource && !hold_given {
                let work = Duration::from_millis(5);
                args.hold = Hold {
                    min: work,
                    max: work,
                };
            }
            args
        }
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
    let outcome = if args.child.is_some() {
        runtime.block_on(run_child(args))
    } else {
        runtime.block_on(run(args))
    };
    match outcome {
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

/// Checks the options against each other (what clap cannot).
fn check_options(args: &mut Args) -> Result<(), Failure> {
    let cluster_chaos = args
        .chaos
        .iter()
        .any(|c| !matches!(c.kind, ChaosKind::PauseClient(_)));
    if !args.seeds.is_empty() && cluster_chaos {
        return Err(Failure::Usage(
            "--chaos failover, kill and migrate work only on the embedded cluster (drop --seeds)"
                .into(),
        ));
    }
    if let Some(chaos) = args.chaos.iter().find(|c| c.at >= args.duration) {
        return Err(Failure::Usage(format!(
            "--chaos {}@{:?} is not before the end of --duration {:?}",
            chaos.kind, chaos.at, args.duration
        )));
    }
    if args.processes < 2
        && let Some(c) = args
            .chaos
            .iter()
            .find(|c| matches!(c.kind, ChaosKind::PauseClient(_)))
    {
        return Err(Failure::Usage(format!(
            "--chaos {}@{:?} needs --processes 2 or more",
            c.kind, c.at
        )));
    }
    if args.processes > args.workers {
        return Err(Failure::Usage(format!(
            "--processes {} is more than --workers {}",
            args.processes, args.workers
        )));
    }
    if args.processes > 1 && args.redlock.is_some() {
        return Err(Failure::Usage(
            "--redlock runs in one process (drop --processes)".into(),
        ));
    }
    if args.resource {
        match args.mode {
            Mode::Try | Mode::Fenced => args.mode = Mode::Fenced,
            other => {
                return Err(Failure::Usage(format!(
                    "--resource implies --mode fenced, not {other}"
                )));
            }
        }
    }
    Ok(())
}

/// The lock manager every process builds the same way.
async fn build_manager(args: &Args, seeds: &[String]) -> shardlock::Result<LockManager> {
    let hot_keys = (args.keys / 100).max(1);
    LockManager::builder()
        .seeds(seeds)
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
}

/// The `user:password@` part of the first seed, if any.
fn seed_auth(seeds: &[String]) -> String {
    seeds
        .first()
        .and_then(|s| s.strip_prefix("redis://"))
        .and_then(|rest| rest.rsplit_once('@'))
        .map_or(String::new(), |(auth, _)| format!("{auth}@"))
}

/// Joins the in-process workers within `grace`, aborting what is left.
async fn join_workers(
    workers: &mut tokio::task::JoinSet<()>,
    grace: Duration,
) -> Result<(), Failure> {
    let joined = tokio::time::timeout(grace, async {
        while let Some(done) = workers.join_next().await {
            if let Err(e) = done {
                return Err(Failure::Run(format!("a worker failed: {e}")));
            }
        }
        Ok(())
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(_) => {
            workers.abort_all();
            Ok(())
        }
    }
}

async fn run(mut args: Args) -> Result<(), Failure> {
    let keys = KeyChooser::new(args.keys, args.distribution).map_err(Failure::Usage)?;
    check_options(&mut args)?;

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
    let resource_server = if args.resource {
        eprintln!("starting the protected resource: one standalone server");
        Some(StandaloneServer::start().await.map_err(|e| match e {
            TestkitError::RedisServerNotFound { .. } => Failure::Usage(e.to_string()),
            e => Failure::Run(format!("cannot start the protected resource: {e}")),
        })?)
    } else {
        None
    };
    let resource_url = resource_server.as_ref().map(StandaloneServer::url);
    if let Some(addr) = args.metrics_addr {
        eprintln!("metrics: http://{addr}/metrics");
    }
    let mgr = build_manager(&args, &seeds).await.map_err(|e| {
        let message = format!("cannot reach the cluster at {}: {e}", seeds.join(","));
        match cluster {
            None => Failure::Usage(message),
            Some(_) => Failure::Run(message),
        }
    })?;
    let shards = mgr.client().topology().shards().len();
    let multi = args.processes > 1;
    let observe = args.resource || multi;
    eprintln!(
        "cluster: {shards} shards; {} workers{}, {} keys, mode {}, {:?} of load{}",
        args.workers,
        if multi {
            format!(" in {} client processes", args.processes)
        } else {
            String::new()
        },
        args.keys,
        args.mode,
        args.duration,
        if args.resource {
            ", writes to a fenced protected resource"
        } else {
            ""
        }
    );

    let server_before = match &cluster {
        Some(c) => cpu::server_counters(c).await,
        None => None,
    };
    let routing_before = mgr.client().stats();
    let cpu_before = cpu::process_cpu();

    // Client processes start together, a moment from now, so each has
    // built its manager by then.
    let child_dir = if multi {
        Some(
            tempfile::Builder::new()
                .prefix("shardlock-loadtest-")
                .tempdir()
                .map_err(|e| Failure::Run(format!("cannot make a temporary directory: {e}")))?,
        )
    } else {
        None
    };
    let lead = if multi {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let start_ns = now_ns() + lead.as_nanos() as u64;
    let start = Instant::now() + lead;
    let resource = match (&resource_url, multi) {
        (Some(url), false) => Some(Resource::connect(url).await.map_err(Failure::Run)?),
        _ => None,
    };
    let placement = if multi {
        Placement {
            process: 0,
            workers: 0..0,
        }
    } else {
        Placement::whole(&args)
    };
    let shared = Shared::start_at(
        mgr.clone(),
        None,
        keys,
        &args,
        start,
        placement,
        resource,
        observe,
    );
    let mut children = match &child_dir {
        Some(dir) => {
            let extra_seeds = if cluster.is_some() {
                seeds.clone()
            } else {
                Vec::new()
            };
            procs::spawn(
                args.processes,
                &extra_seeds,
                dir.path(),
                resource_url.as_deref(),
                start_ns,
            )
            .map_err(Failure::Run)?
        }
        None => Vec::new(),
    };
    let mut workers = if multi {
        tokio::task::JoinSet::new()
    } else {
        shared.spawn_workers()
    };
    let progress = (!multi).then(|| progress::Progress::start(shared.clone()));
    let say = |line: &str| match &progress {
        Some(p) => p.println(line),
        None => eprintln!("{line}"),
    };

    let targets = chaos::Targets {
        cluster: cluster.as_ref(),
        clients: children.iter().map(|c| (c.index, c.pid())).collect(),
    };
    let mut injected = Vec::new();
    let mut events = args.chaos.clone();
    events.sort_by_key(|c| c.at);
    for event in &events {
        tokio::time::sleep_until(start + event.at).await;
        let fault = chaos::inject(&targets, &shared, event.kind, start).await;
        let o = &fault.outcome;
        say(&format!(
            "chaos: {} of {} at {:.1} s{}",
            o.what,
            o.node,
            o.at_s,
            o.error
                .as_ref()
                .map_or(String::new(), |e| format!(" failed: {e}"))
        ));
        injected.push(fault);
    }
    tokio::time::sleep_until(shared.end).await;
    shared.stop.store(true, Relaxed);
    // A worker stuck in a long wait or hold gets a little time to finish.
    let grace = args.ttl.max(Duration::from_secs(5));
    let joined = join_workers(&mut workers, grace).await;
    let exits = procs::wait_all(&mut children, shared.end + procs::child_grace(args.ttl)).await;
    for fault in &mut injected {
        if let Some(ending) = fault.ending.take() {
            let _ = ending.await;
        }
    }
    let duration_s = start.elapsed().as_secs_f64();
    let end_ns = now_ns();
    let cpu_after = cpu::process_cpu();
    if let Some(p) = &progress {
        p.finish();
    }
    joined?;
    let routing_after = mgr.client().stats();
    let server_after = match &cluster {
        Some(c) => cpu::server_counters(c).await,
        None => None,
    };
    let ended = Instant::now();

    let merged = child_dir
        .as_ref()
        .map(|dir| procs::collect(dir.path(), &exits));
    let per_process: Vec<serde_json::Value> = merged
        .as_ref()
        .map(|m| m.per_process.clone())
        .unwrap_or_default();
    let mut failed_children: Vec<String> = exits
        .iter()
        .filter(|e| !e.success)
        .map(|e| format!("client process {} (pid {}): {}", e.index, e.pid, e.status))
        .collect();
    if let Some(m) = &merged {
        failed_children.extend(m.missing.iter().cloned());
    }
    let (total, timeline, routing, client_cpu_s, overlaps, token_regressions, leases, writes) =
        match merged {
            Some(m) => (
                m.total.unwrap_or_else(workload::Tally::new),
                m.timeline,
                m.routing,
                m.cpu_s,
                m.overlaps,
                m.token_regressions,
                m.leases,
                m.writes,
            ),
            None => {
                let mut routing = routing_after;
                routing.attempts -= routing_before.attempts;
                routing.writes -= routing_before.writes;
                routing.moved -= routing_before.moved;
                routing.ask -= routing_before.ask;
                routing.retryable_errors -= routing_before.retryable_errors;
                routing.refreshes -= routing_before.refreshes;
                routing.refresh_failures -= routing_before.refresh_failures;
                let (leases, writes) = shared.take_events();
                (
                    shared.total(),
                    shared.timeline(),
                    routing,
                    cpu_before
                        .zip(cpu_after)
                        .map(|(b, a)| a.own.saturating_sub(b.own).as_secs_f64()),
                    shared.safety.overlaps(),
                    shared.safety.token_regressions(),
                    leases,
                    writes,
                )
            }
        };

    let mut chaos_outcomes = Vec::new();
    let mut windows = Vec::new();
    for fault in injected {
        let mut outcome = fault.outcome;
        outcome.unavailable_s = match (&fault.tracker, &fault.slots) {
            (Some(t), _) if !multi => Some(t.close(ended).as_secs_f64()),
            (_, Some(slots)) => {
                Some(chaos::longest_gap_ns(&leases, slots, fault.start_ns, end_ns) as f64 / 1e9)
            }
            _ => None,
        };
        windows.push(FaultWindow {
            name: outcome.what.clone(),
            start: fault.start_ns,
            end: fault.end_ns,
            counted_until: fault.end_ns + args.ttl.as_nanos() as u64,
        });
        chaos_outcomes.push(outcome);
    }

    let observed = if observe {
        // Every guard is released (workers joined, children exited).
        let left = leftovers::scan(&mgr, &seed_auth(&seeds))
            .await
            .map_err(Failure::Run)?;
        let verdict = observer::check(&leases, &writes, &windows, &left);
        Some(Observed {
            verdict,
            start_ns,
            per_process,
            failed_processes: failed_children.clone(),
        })
    } else {
        None
    };

    let raw = if args.compare_raw {
        eprintln!("running redis-benchmark on the same cluster");
        let first = seeds[0].trim_start_matches("redis://");
        let addr = first.rsplit('@').next().unwrap_or(first);
        raw::compare(addr, args.workers, args.keys, cluster.as_ref()).await
    } else {
        Vec::new()
    };
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
        overlaps,
        token_regressions,
        client_cpu_s,
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
        observed: observed.as_ref(),
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
    drop(resource_server);
    if !failed_children.is_empty() {
        return Err(Failure::Run(format!(
            "client processes failed: {}",
            failed_children.join("; ")
        )));
    }
    let stale = observed
        .as_ref()
        .map_or(0, |o| o.verdict.overall.stale_writes_accepted);
    if stale > 0 && !args.expect_unsafe {
        return Err(Failure::Run(format!(
            "the protected resource accepted {stale} stale writes (the safety claim failed; --expect-unsafe if the run breaks it on purpose)"
        )));
    }
    Ok(())
}

/// One client process of a `--processes` run: its share of the workers,
/// from the parent's start time, results into the parent's directory.
async fn run_child(mut args: Args) -> Result<(), Failure> {
    procs::die_with_parent(args.parent_pid).map_err(Failure::Run)?;
    check_options(&mut args)?;
    let (Some(index), Some(dir), Some(start_ns)) =
        (args.child, args.child_dir.clone(), args.start_at_ns)
    else {
        return Err(Failure::Usage(
            "--child needs --child-dir and --start-at-ns".into(),
        ));
    };
    if index >= args.processes {
        return Err(Failure::Usage(format!(
            "--child {index} is not below --processes {}",
            args.processes
        )));
    }
    let keys = KeyChooser::new(args.keys, args.distribution).map_err(Failure::Usage)?;
    let mgr = build_manager(&args, &args.seeds)
        .await
        .map_err(|e| Failure::Run(format!("client process {index}: {e}")))?;
    let resource = match &args.resource_url {
        Some(url) => Some(Resource::connect(url).await.map_err(Failure::Run)?),
        None => None,
    };
    let start = Instant::now() + Duration::from_nanos(start_ns.saturating_sub(now_ns()));
    let routing_before = mgr.client().stats();
    let cpu_before = cpu::process_cpu();
    let placement = Placement::share(index, args.processes, args.workers);
    let shared = Shared::start_at(
        mgr.clone(),
        None,
        keys,
        &args,
        start,
        placement,
        resource,
        true,
    );
    tokio::time::sleep_until(start).await;
    let mut workers = shared.spawn_workers();
    tokio::time::sleep_until(shared.end).await;
    shared.stop.store(true, Relaxed);
    join_workers(&mut workers, args.ttl.max(Duration::from_secs(5))).await?;
    let duration_s = start.elapsed().as_secs_f64();
    let cpu_after = cpu::process_cpu();
    let mut routing = mgr.client().stats();
    routing.attempts -= routing_before.attempts;
    routing.writes -= routing_before.writes;
    routing.moved -= routing_before.moved;
    routing.ask -= routing_before.ask;
    routing.retryable_errors -= routing_before.retryable_errors;
    routing.refreshes -= routing_before.refreshes;
    routing.refresh_failures -= routing_before.refresh_failures;
    let figures = procs::ChildFigures {
        routing,
        cpu_s: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| a.own.saturating_sub(b.own).as_secs_f64()),
        duration_s,
    };
    procs::write_results(&dir, index, &shared, &figures)
        .map_err(|e| Failure::Run(format!("client process {index}: cannot write results: {e}")))
}
