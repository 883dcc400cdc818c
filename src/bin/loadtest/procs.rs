//! `--processes N`: the workers run in N client processes, children of the
//! load test started with the same options plus hidden ones (`--child`,
//! `--child-dir`, `--parent-pid`, `--resource-url`, `--start-at-ns`, and
//! the cluster's `--seeds`).
//!
//! What holds:
//! - Each child has its own lock manager and connections, runs its share
//!   of `--workers` ([`Placement::share`]) from one start time on
//!   CLOCK_MONOTONIC, and writes its results into the parent's temporary
//!   directory: `child-<i>.events.jsonl` (the observer's events),
//!   `child-<i>.hdr` (its acquire, cycle and hold histograms, then one
//!   acquire histogram per second, hdrhistogram V2), and last
//!   `child-<i>.json` (counters; written through a rename, so it exists
//!   only complete).
//! - A child dies with the parent (`PR_SET_PDEATHSIG` = SIGKILL, and it
//!   exits at once if the parent is already gone).
//! - The parent waits for every child until the run's end plus a grace
//!   ([`child_grace`]), then kills what is left; each child's exit status
//!   is reported, and a child without results counts as such, not as zero.
//!
//! What not: the figures of a child that died are missing from the merged
//! report (its events too); a child's background releases still queued
//! when it exits are abandoned (those keys expire by TTL, and show up as
//! leftovers).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};
use shardlock::RouterStats;

use crate::observer::{LeaseEvent, WriteEvent};
use crate::workload::{Second, Shared, Tally};

/// How long after the end of the load a child may take to finish (its
/// workers' last cycles, writing its results).
pub(crate) fn child_grace(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(5)) + Duration::from_secs(5)
}

/// A started client process.
pub(crate) struct ClientProcess {
    pub(crate) index: usize,
    pub(crate) child: Child,
}

impl ClientProcess {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// How a client process ended.
#[derive(Debug, Clone)]
pub(crate) struct ProcessExit {
    pub(crate) index: usize,
    pub(crate) pid: i32,
    /// `exit 0`, `exit 1`, `signal 9`, `killed after the deadline`, …
    pub(crate) status: String,
    pub(crate) success: bool,
}

/// Starts `n` children of this binary with this process's own arguments
/// plus the hidden ones.
pub(crate) fn spawn(
    n: usize,
    extra_seeds: &[String],
    dir: &Path,
    resource_url: Option<&str>,
    start_at_ns: u64,
) -> Result<Vec<ClientProcess>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let own: Vec<String> = std::env::args().skip(1).collect();
    let mut children = Vec::with_capacity(n);
    for index in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&own)
            .arg("--child")
            .arg(index.to_string())
            .arg("--child-dir")
            .arg(dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--start-at-ns")
            .arg(start_at_ns.to_string());
        if !extra_seeds.is_empty() {
            cmd.arg("--seeds").arg(extra_seeds.join(","));
        }
        if let Some(url) = resource_url {
            cmd.arg("--resource-url").arg(url);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start client process {index}: {e}"))?;
        children.push(ClientProcess { index, child });
    }
    Ok(children)
}

/// Waits for every child until `deadline`, polling; kills and reaps the
/// ones still running then.
pub(crate) async fn wait_all(
    children: &mut [ClientProcess],
    deadline: tokio::time::Instant,
) -> Vec<ProcessExit> {
    let mut exits: Vec<Option<ProcessExit>> = vec![None; children.len()];
    loop {
        for (slot, c) in exits.iter_mut().zip(children.iter_mut()) {
            if slot.is_none()
                && let Ok(Some(status)) = c.child.try_wait()
            {
                *slot = Some(exit_of(c, status, false));
            }
        }
        if exits.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (slot, c) in exits.iter_mut().zip(children.iter_mut()) {
        if slot.is_none() {
            let _ = c.child.kill();
            let status = c.child.wait();
            *slot = Some(match status {
                Ok(status) => exit_of(c, status, true),
                Err(e) => ProcessExit {
                    index: c.index,
                    pid: c.pid(),
                    status: format!("lost: {e}"),
                    success: false,
                },
            });
        }
    }
    exits.into_iter().flatten().collect()
}

fn exit_of(c: &ClientProcess, status: std::process::ExitStatus, killed: bool) -> ProcessExit {
    use std::os::unix::process::ExitStatusExt;
    let text = match (status.code(), status.signal()) {
        _ if killed => "killed after the deadline".to_owned(),
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    };
    ProcessExit {
        index: c.index,
        pid: c.pid(),
        status: text,
        success: status.success() && !killed,
    }
}

/// In a child: die with the parent, and leave at once if it is gone.
pub(crate) fn die_with_parent(parent: Option<i32>) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    if let Some(parent) = parent
        && nix::unistd::getppid().as_raw() != parent
    {
        return Err("the parent process is gone".into());
    }
    Ok(())
}

fn paths(dir: &Path, index: usize) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("child-{index}.events.jsonl")),
        dir.join(format!("child-{index}.hdr")),
        dir.join(format!("child-{index}.json")),
    )
}

/// What a child measured besides its tallies.
pub(crate) struct ChildFigures {
    pub(crate) routing: RouterStats,
    pub(crate) cpu_s: Option<f64>,
    pub(crate) duration_s: f64,
}

/// In a child: writes its results (events, histograms, then counters).
pub(crate) fn write_results(
    dir: &Path,
    index: usize,
    shared: &Shared,
    figures: &ChildFigures,
) -> std::io::Result<()> {
    let (events_path, hdr_path, json_path) = paths(dir, index);
    let (leases, writes) = shared.take_events();
    let mut events = BufWriter::new(std::fs::File::create(&events_path)?);
    for lease in &leases {
        writeln!(events, "{}", lease.to_json())?;
    }
    for write in &writes {
        writeln!(events, "{}", write.to_json())?;
    }
    events.flush()?;

    let total = shared.total();
    let timeline = shared.timeline();
    let mut hdr = BufWriter::new(std::fs::File::create(&hdr_path)?);
    let mut serializer = V2Serializer::new();
    let invalid = |e| std::io::Error::other(format!("histogram: {e:?}"));
    for h in [&total.acquire, &total.cycle, &total.hold] {
        serializer.serialize(h, &mut hdr).map_err(invalid)?;
    }
    for second in &timeline {
        serializer
            .serialize(&second.acquire, &mut hdr)
            .map_err(invalid)?;
    }
    hdr.flush()?;

    let r = &figures.routing;
    let summary = json!({
        "index": index,
        "pid": std::process::id(),
        "workers": [shared.placement.workers.start, shared.placement.workers.end],
        "cycles": total.cycles,
        "acquired": total.acquired,
        "failed_acquires": total.failed_acquires,
        "lost_leases": total.lost_leases,
        "errors_by_kind": total.errors,
        "overlaps": shared.safety.overlaps(),
        "token_regressions": shared.safety.token_regressions(),
        "seconds_cycles": timeline.iter().map(|s| s.cycles).collect::<Vec<_>>(),
        "client_cpu_s": figures.cpu_s,
        "duration_s": figures.duration_s,
        "routing": {
            "attempts": r.attempts, "writes": r.writes, "moved": r.moved, "ask": r.ask,
            "retryable_errors": r.retryable_errors, "refreshes": r.refreshes,
            "refresh_failures": r.refresh_failures,
        },
    });
    let partial = json_path.with_extension("json.partial");
    std::fs::write(&partial, summary.to_string())?;
    std::fs::rename(&partial, &json_path)
}

/// Every child's results merged.
#[derive(Default)]
pub(crate) struct Merged {
    pub(crate) total: Option<Tally>,
    pub(crate) timeline: Vec<Second>,
    pub(crate) leases: Vec<LeaseEvent>,
    pub(crate) writes: Vec<WriteEvent>,
    pub(crate) routing: RouterStats,
    pub(crate) cpu_s: Option<f64>,
    pub(crate) overlaps: u64,
    pub(crate) token_regressions: u64,
    /// One object per child: its own counters and exit status.
    pub(crate) per_process: Vec<Value>,
    /// Children whose results are missing or unreadable, with why.
    pub(crate) missing: Vec<String>,
}

/// Reads and merges the results of the children that exited as `exits` say.
pub(crate) fn collect(dir: &Path, exits: &[ProcessExit]) -> Merged {
    let mut merged = Merged {
        total: Some(Tally::new()),
        cpu_s: Some(0.0),
        ..Merged::default()
    };
    for exit in exits {
        match read_child(dir, exit.index, &mut merged) {
            Ok(mut summary) => {
                summary["exit"] = json!(exit.status);
                merged.per_process.push(summary);
            }
            Err(e) => {
                merged.missing.push(format!(
                    "client process {} ({}): {e}",
                    exit.index, exit.status
                ));
                merged.per_process.push(json!({
                    "index": exit.index,
                    "pid": exit.pid,
                    "exit": exit.status,
                    "error": e,
                }));
            }
        }
    }
    merged
}

fn read_child(dir: &Path, index: usize, merged: &mut Merged) -> Result<Value, String> {
    let (events_path, hdr_path, json_path) = paths(dir, index);
    let text = std::fs::read_to_string(&json_path).map_err(|e| format!("no results: {e}"))?;
    let summary: Value = serde_json::from_str(&text).map_err(|e| format!("bad results: {e}"))?;

    let file = std::fs::File::open(&hdr_path).map_err(|e| format!("no histograms: {e}"))?;
    let mut hdr = BufReader::new(file);
    let mut deserializer = Deserializer::new();
    let mut read = || -> Result<Histogram<u64>, String> {
        deserializer
            .deserialize(&mut hdr)
            .map_err(|e| format!("bad histogram: {e:?}"))
    };
    let mut tally = Tally::new();
    tally.acquire = read()?;
    tally.cycle = read()?;
    tally.hold = read()?;
    tally.cycles = summary["cycles"].as_u64().unwrap_or(0);
    tally.acquired = summary["acquired"].as_u64().unwrap_or(0);
    tally.failed_acquires = summary["failed_acquires"].as_u64().unwrap_or(0);
    tally.lost_leases = summary["lost_leases"].as_u64().unwrap_or(0);
    if let Some(errors) = summary["errors_by_kind"].as_object() {
        for (kind, n) in errors {
            tally.errors.insert(kind.clone(), n.as_u64().unwrap_or(0));
        }
    }
    let seconds = summary["seconds_cycles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if merged.timeline.len() < seconds.len() {
        merged.timeline.resize_with(seconds.len(), Second::new);
    }
    for (into, cycles) in merged.timeline.iter_mut().zip(&seconds) {
        into.cycles += cycles.as_u64().unwrap_or(0);
        let _ = into.acquire.add(&read()?);
    }

    let events = std::fs::File::open(&events_path).map_err(|e| format!("no events: {e}"))?;
    for line in BufReader::new(events).lines() {
        let line = line.map_err(|e| format!("events: {e}"))?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad event: {e}"))?;
        if let Some(lease) = LeaseEvent::from_json(&v) {
            merged.leases.push(lease);
        } else if let Some(write) = WriteEvent::from_json(&v) {
            merged.writes.push(write);
        } else {
            return Err(format!("bad event: {line}"));
        }
    }

    if let Some(total) = &mut merged.total {
        total.merge(&tally);
    }
    let r = &summary["routing"];
    let n = |f: &str| r[f].as_u64().unwrap_or(0);
    merged.routing.attempts += n("attempts");
    merged.routing.writes += n("writes");
    merged.routing.moved += n("moved");
    merged.routing.ask += n("ask");
    merged.routing.retryable_errors += n("retryable_errors");
    merged.routing.refreshes += n("refreshes");
    merged.routing.refresh_failures += n("refresh_failures");
    merged.cpu_s = merged
        .cpu_s
        .zip(summary["client_cpu_s"].as_f64())
        .map(|(a, b)| a + b);
    merged.overlaps += summary["overlaps"].as_u64().unwrap_or(0);
    merged.token_regressions += summary["token_regressions"].as_u64().unwrap_or(0);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use crate::workload::Placement;

    #[test]
    fn workers_are_shared_without_gaps_or_overlaps() {
        for (processes, workers) in [(1, 5), (2, 5), (3, 10), (4, 2), (4, 4)] {
            let mut next = 0;
            for index in 0..processes {
                let share = Placement::share(index, processes, workers);
                assert_eq!(share.workers.start, next, "{processes} {workers}");
                next = share.workers.end;
            }
            assert_eq!(next, workers);
        }
    }
}
