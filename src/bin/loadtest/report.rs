//! The report at the end of a run: one JSON object (written with `--json`)
//! and the same figures for a person on stdout.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use shardlock::RouterStats;

use crate::args::Args;
use crate::observer::{Findings, Verdict};
use crate::raw::RawRun;
use crate::workload::Tally;

/// A fault that was injected and what the run saw around it.
#[derive(Debug, Clone)]
pub(crate) struct ChaosOutcome {
    pub(crate) what: String,
    pub(crate) at_s: f64,
    pub(crate) node: String,
    /// Longest time with no successful acquire on the affected shard's
    /// slots, from the fault to the end of the run.
    pub(crate) unavailable_s: Option<f64>,
    pub(crate) error: Option<String>,
}

/// Everything measured, gathered by `main`.
pub(crate) struct Measured<'a> {
    pub(crate) args: &'a Args,
    pub(crate) shards: usize,
    pub(crate) embedded: bool,
    pub(crate) total: &'a Tally,
    pub(crate) duration_s: f64,
    pub(crate) overlaps: u64,
    pub(crate) token_regressions: u64,
    pub(crate) client_cpu_s: Option<f64>,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_commands: Option<u64>,
    pub(crate) routing: RouterStats,
    pub(crate) raw: Vec<Result<RawRun, String>>,
    pub(crate) chaos: Vec<ChaosOutcome>,
    /// Where the plot was written, if one was asked for.
    pub(crate) plot: Option<&'a std::path::Path>,
    /// The outside observer (`--resource` or `--processes` ≥ 2).
    pub(crate) observed: Option<&'a Observed>,
}

/// What the outside observer found, and the client processes.
pub(crate) struct Observed {
    pub(crate) verdict: Verdict,
    /// The load's start on CLOCK_MONOTONIC (fault windows count from it).
    pub(crate) start_ns: u64,
    /// One object per client process (empty in one process).
    pub(crate) per_process: Vec<Value>,
    pub(crate) failed_processes: Vec<String>,
}

/// The observer's fields, added to the top level of the report.
fn observer_json(o: &Observed, processes: usize) -> Value {
    let mut fields = o.verdict.overall.to_json();
    let windows: Vec<Value> = o
        .verdict
        .windows
        .iter()
        .map(|(w, f)| {
            let mut v = f.to_json();
            v["name"] = json!(w.name);
            v["start_s"] = json!(w.start.saturating_sub(o.start_ns) as f64 / 1e9);
            v["end_s"] = json!(w.end.saturating_sub(o.start_ns) as f64 / 1e9);
            v["counted_until_s"] = json!(w.counted_until.saturating_sub(o.start_ns) as f64 / 1e9);
            v
        })
        .collect();
    let keys: serde_json::Map<String, Value> = o
        .verdict
        .keys
        .iter()
        .map(|(k, f)| (k.to_string(), f.to_json()))
        .collect();
    fields["fault_windows"] = json!(windows);
    fields["observer_keys"] = Value::Object(keys);
    fields["processes"] = json!(processes);
    fields["per_process"] = json!(o.per_process);
    fields["failed_processes"] = json!(o.failed_processes);
    fields
}

fn findings_line(f: &Findings) -> String {
    format!(
        "{} overlapping holds, stale writes {} rejected / {} accepted, {} fresh writes rejected, {} lost leases reported, {} unreported losses",
        f.overlapping_holds,
        f.stale_writes_rejected,
        f.stale_writes_accepted,
        f.fresh_writes_rejected,
        f.lost_leases_reported,
        f.unreported_losses
    )
}

/// The `quantile` of a µs histogram, in ms (0 when empty).
pub(crate) fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(quantile) as f64 / 1e3
}

fn ratio(a: f64, b: u64) -> Option<f64> {
    (b > 0).then(|| a / b as f64)
}

pub(crate) fn to_json(m: &Measured<'_>) -> Value {
    let t = m.total;
    let cycles_per_sec = t.cycles as f64 / m.duration_s;
    let attempts = t.acquired + t.failed_acquires;
    let client_cpu_us = m.client_cpu_s.and_then(|s| ratio(s * 1e6, t.cycles));
    let server_cpu_us = m.server_cpu_s.and_then(|s| ratio(s * 1e6, t.cycles));
    let raw: Vec<Value> = m
        .raw
        .iter()
        .map(|run| match run {
            Ok(run) => json!({
                "pipeline": run.pipeline,
                "set_per_sec": run.requests_per_sec,
                "set_p50_ms": run.p50_ms,
                "cycle_p50_ratio": run.p50_ms.filter(|&p| p > 0.0).map(|p| ms(&t.cycle, 0.5) / p),
                "cycles_per_sec_ratio": cycles_per_sec / run.requests_per_sec,
                "client_cpu_us_per_set": run.client_cpu_us,
                "server_cpu_us_per_set": run.server_cpu_us,
            }),
            Err(e) => json!({ "error": e }),
        })
        .collect();
    let chaos: Vec<Value> = m
        .chaos
        .iter()
        .map(|c| {
            json!({
                "fault": c.what,
                "at_s": c.at_s,
                "node": c.node,
                "unavailable_s": c.unavailable_s,
                "error": c.error,
            })
        })
        .collect();
    let mut report = json!({
        "cycles": t.cycles,
        "cycles_per_sec": cycles_per_sec,
        "acquired": t.acquired,
        "failed_acquires": t.failed_acquires,
        "contention_rate": if attempts > 0 { t.failed_acquires as f64 / attempts as f64 } else { 0.0 },
        "errors": t.errors(),
        "errors_by_kind": t.errors,
        "lost_leases": t.lost_leases,
        "violations": m.overlaps + m.token_regressions,
        "overlaps": m.overlaps,
        "token_regressions": m.token_regressions,
        "acquire_p50_ms": ms(&t.acquire, 0.5),
        "acquire_p90_ms": ms(&t.acquire, 0.9),
        "acquire_p99_ms": ms(&t.acquire, 0.99),
        "acquire_p999_ms": ms(&t.acquire, 0.999),
        "acquire_max_ms": t.acquire.max() as f64 / 1e3,
        "cycle_p50_ms": ms(&t.cycle, 0.5),
        "cycle_p99_ms": ms(&t.cycle, 0.99),
        "cycle_max_ms": t.cycle.max() as f64 / 1e3,
        "hold_p50_ms": ms(&t.hold, 0.5),
        "hold_p99_ms": ms(&t.hold, 0.99),
        "client_cpu_us_per_cycle": client_cpu_us,
        "server_cpu_us_per_cycle": server_cpu_us,
        "redis_commands_per_acquire": m.server_commands.and_then(|c| ratio(c as f64, t.acquired)),
        "client_attempts_per_acquire": ratio(m.routing.attempts as f64, t.acquired),
        "client_attempts_per_write": ratio(m.routing.attempts as f64, m.routing.writes),
        "redirects": { "moved": m.routing.moved, "ask": m.routing.ask },
        "retryable_errors": m.routing.retryable_errors,
        "topology_refreshes": m.routing.refreshes,
        "topology_refresh_failures": m.routing.refresh_failures,
        "duration_s": m.duration_s,
        "shards": m.shards,
        "embedded_cluster": m.embedded,
        "workers": m.args.workers,
        "keys": m.args.keys,
        "distribution": format!("{:?}", m.args.distribution),
        "mode": m.args.mode.to_string(),
        "ttl_ms": m.args.ttl.as_secs_f64() * 1e3,
        "hold_ms": [m.args.hold.min.as_secs_f64() * 1e3, m.args.hold.max.as_secs_f64() * 1e3],
        "auto_renew": m.args.auto_renew,
        "rate": m.args.rate,
        "seed": m.args.seed,
        "raw": raw,
        "chaos": chaos,
        "plot": m.plot.map(|p| p.display().to_string()),
        "processes": m.args.processes,
        "resource": m.args.resource,
    });
    if let Some(o) = m.observed
        && let (Value::Object(into), Value::Object(from)) =
            (&mut report, observer_json(o, m.args.processes))
    {
        into.extend(from);
    }
    report
}

fn opt(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "unknown".into(),
    }
}

/// The report for a person.
pub(crate) fn print_human(m: &Measured<'_>, j: &Value) {
    let a = m.args;
    let loop_kind = match a.rate {
        Some(r) => format!("open loop at {r} cycles/s"),
        None => "closed loop".into(),
    };
    println!();
    println!(
        "shardlock load test: {} shards{}, {} workers, {} keys ({:?}), mode {}, ttl {:?}, hold {:?}..{:?}{}, {loop_kind}",
        m.shards,
        if m.embedded { " (embedded)" } else { "" },
        a.workers,
        a.keys,
        a.distribution,
        a.mode,
        a.ttl,
        a.hold.min,
        a.hold.max,
        if a.auto_renew { ", auto-renew" } else { "" },
    );
    println!(
        "cycles:      {} in {:.1} s = {:.0} cycles/s",
        j["cycles"],
        m.duration_s,
        j["cycles_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "acquires:    {} taken, {} failed (contention {:.2}%)",
        j["acquired"],
        j["failed_acquires"],
        j["contention_rate"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "acquire ms:  p50 {} p90 {} p99 {} p99.9 {} max {}",
        opt(&j["acquire_p50_ms"], 3),
        opt(&j["acquire_p90_ms"], 3),
        opt(&j["acquire_p99_ms"], 3),
        opt(&j["acquire_p999_ms"], 3),
        opt(&j["acquire_max_ms"], 3)
    );
    println!(
        "cycle ms:    p50 {} p99 {} max {}; hold ms: p50 {} p99 {}",
        opt(&j["cycle_p50_ms"], 3),
        opt(&j["cycle_p99_ms"], 3),
        opt(&j["cycle_max_ms"], 3),
        opt(&j["hold_p50_ms"], 3),
        opt(&j["hold_p99_ms"], 3)
    );
    println!(
        "CPU µs/cycle: client {}, servers {}; per acquire: {} Redis commands on primaries (calls inside scripts included), {} round trips sent; {} requests per write",
        opt(&j["client_cpu_us_per_cycle"], 1),
        opt(&j["server_cpu_us_per_cycle"], 1),
        opt(&j["redis_commands_per_acquire"], 2),
        opt(&j["client_attempts_per_acquire"], 2),
        opt(&j["client_attempts_per_write"], 2)
    );
    let kinds: Vec<String> = m
        .total
        .errors
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "errors:      {}{}; lost leases {}",
        j["errors"],
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        j["lost_leases"]
    );
    println!(
        "routing:     {} MOVED, {} ASK, {} retryable errors, {} topology refreshes ({} failed)",
        m.routing.moved,
        m.routing.ask,
        m.routing.retryable_errors,
        m.routing.refreshes,
        m.routing.refresh_failures
    );
    for c in &m.chaos {
        match (&c.error, c.unavailable_s) {
            (Some(e), _) => println!("chaos:       {} at {:.1} s failed: {e}", c.what, c.at_s),
            (None, None) => println!("chaos:       {} of {} at {:.1} s", c.what, c.node, c.at_s),
            (None, Some(gap)) => println!(
                "chaos:       {} of {} at {:.1} s; longest gap without an acquire on its shard {gap:.3} s",
                c.what, c.node, c.at_s,
            ),
        }
    }
    let cycles_per_sec = j["cycles_per_sec"].as_f64().unwrap_or(0.0);
    let our_cpu = j["client_cpu_us_per_cycle"]
        .as_f64()
        .zip(j["server_cpu_us_per_cycle"].as_f64())
        .map(|(c, s)| c + s);
    for run in &m.raw {
        match run {
            Ok(r) => {
                let their_cpu = r.client_cpu_us.zip(r.server_cpu_us).map(|(c, s)| c + s);
                println!(
                    "redis-benchmark --cluster -t set -c {} -P {}: {:.0} SET/s, p50 {} ms; cycles/s ÷ SET/s = {:.2}; cycle p50 ÷ SET p50 = {}; CPU µs client+server: ours {} per cycle, theirs {} per SET{}",
                    a.workers,
                    r.pipeline,
                    r.requests_per_sec,
                    r.p50_ms.map_or("unknown".into(), |p| format!("{p:.3}")),
                    cycles_per_sec / r.requests_per_sec,
                    r.p50_ms
                        .filter(|&p| p > 0.0)
                        .map_or("unknown".into(), |p| format!(
                            "{:.2}",
                            ms(&m.total.cycle, 0.5) / p
                        )),
                    our_cpu.map_or("unknown".into(), |c| format!("{c:.1}")),
                    their_cpu.map_or("unknown".into(), |c| format!("{c:.1}")),
                    our_cpu
                        .zip(their_cpu)
                        .map_or(String::new(), |(o, t)| format!(" (ratio {:.2})", o / t)),
                );
            }
            Err(e) => println!("redis-benchmark unavailable: {e}"),
        }
    }
    if let Some(plot) = m.plot {
        println!(
            "plot:        {} (throughput and acquire p50/p99 per second, chaos marked)",
            plot.display()
        );
    }
    println!(
        "violations: {} ({} overlapping holds, {} fencing tokens not increasing){}",
        m.overlaps + m.token_regressions,
        m.overlaps,
        m.token_regressions,
        if a.processes > 1 {
            " — in-process check, summed over the client processes"
        } else {
            ""
        }
    );
    if let Some(o) = m.observed {
        print_observer(o, a);
    }
}

fn print_observer(o: &Observed, a: &Args) {
    let f = &o.verdict.overall;
    if a.processes > 1 {
        println!(
            "processes:   {} client processes; figures above are merged over them (histograms merged, CPU summed); per process in the JSON report",
            a.processes
        );
        for p in &o.per_process {
            println!(
                "  process {}: pid {}, {}, {} cycles",
                p["index"],
                p["pid"],
                p["exit"].as_str().unwrap_or("?"),
                p["cycles"]
            );
        }
        for failed in &o.failed_processes {
            println!("  FAILED {failed}");
        }
    }
    println!(
        "observer:    {} leases, {} writes to the resource ({} unanswered), across all processes",
        f.leases, f.writes, f.failed_writes
    );
    if f.overlapping_holds > 0 {
        println!(
            "OVERLAPPING HOLDS: {} pairs of holders held one key at once (Redis cannot prevent this under faults; fencing must catch their writes)",
            f.overlapping_holds
        );
    }
    println!("observer:    {}", findings_line(f));
    println!(
        "leftovers:   {} orphaned leases, {} unreleased leases, {} unattributed keys",
        f.orphaned_leases.unwrap_or(0),
        f.unreleased_leases.unwrap_or(0),
        f.unattributed_leftovers.unwrap_or(0)
    );
    for (w, wf) in &o.verdict.windows {
        let after =
            |ns: Option<u64>| ns.map_or("none".into(), |ns| format!("{:.3} s", ns as f64 / 1e9));
        println!(
            "window:      {} {:.1}..{:.1} s: {}; loss reports first {} last {} after its start",
            w.name,
            w.start.saturating_sub(o.start_ns) as f64 / 1e9,
            w.end.saturating_sub(o.start_ns) as f64 / 1e9,
            findings_line(wf),
            after(wf.first_loss_after),
            after(wf.last_loss_after)
        );
    }
    println!(
        "safety:      {} stale writes accepted{}",
        f.stale_writes_accepted,
        if f.stale_writes_accepted > 0 {
            if a.expect_unsafe {
                " — expected (--expect-unsafe)"
            } else {
                " — THE SAFETY CLAIM FAILED"
            }
        } else {
            ""
        }
    );
}
