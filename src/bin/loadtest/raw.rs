//! `--compare-raw`: redis-benchmark SET on the same cluster, with as many
//! clients as the load test has workers, unpipelined and pipelined at
//! [`PIPELINE_DEPTH`], each with its p50, the servers' and redis-benchmark's
//! own CPU per request. The unpipelined run uses the same arguments as the
//! testkit's `redis_benchmark_set`, but is run here because that helper
//! returns only requests/s and the comparison needs the p50 too.

use std::process::Command;

use shardlock::testkit::TestCluster;

use crate::cpu::{process_cpu, server_counters};

/// Requests in flight per redis-benchmark connection in the pipelined run.
pub(crate) const PIPELINE_DEPTH: usize = 16;

/// One redis-benchmark run.
#[derive(Debug, Clone)]
pub(crate) struct RawRun {
    pub(crate) pipeline: usize,
    pub(crate) requests_per_sec: f64,
    /// Median SET latency as redis-benchmark reports it, ms.
    pub(crate) p50_ms: Option<f64>,
    /// redis-benchmark's own CPU per request, µs.
    pub(crate) client_cpu_us: Option<f64>,
    /// The servers' CPU per request (embedded cluster only), µs.
    pub(crate) server_cpu_us: Option<f64>,
}

pub(crate) async fn compare(
    addr: &str,
    clients: usize,
    keys: u64,
    cluster: Option<&TestCluster>,
) -> Vec<Result<RawRun, String>> {
    let mut runs = Vec::new();
    // Sized to take about two seconds each on a small machine.
    for (pipeline, requests) in [(1, 100_000u64), (PIPELINE_DEPTH, 600_000)] {
        let cpu_before = process_cpu();
        let server_before = match cluster {
            Some(c) => server_counters(c).await,
            None => None,
        };
        let rate = benchmark_set(addr, clients, keys, requests, pipeline);
        let server_after = match cluster {
            Some(c) => server_counters(c).await,
            None => None,
        };
        let cpu_after = process_cpu();
        let per_request = |d: std::time::Duration| d.as_secs_f64() * 1e6 / requests as f64;
        runs.push(rate.map(|(requests_per_sec, p50_ms)| {
            RawRun {
                pipeline,
                requests_per_sec,
                p50_ms,
                client_cpu_us: cpu_before
                    .zip(cpu_after)
                    .map(|(b, a)| per_request(a.children.saturating_sub(b.children))),
                server_cpu_us: server_before
                    .zip(server_after)
                    .map(|(b, a)| per_request(a.cpu.saturating_sub(b.cpu))),
            }
        }));
    }
    runs
}

/// `redis-benchmark --cluster -t set -P depth`; returns SET requests/s and
/// the p50 latency in ms when its CSV has that column (Redis 7 does).
fn benchmark_set(
    addr: &str,
    clients: usize,
    keys: u64,
    requests: u64,
    depth: usize,
) -> Result<(f64, Option<f64>), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let output = Command::new("redis-benchmark")
        .args(["--cluster", "-h", host, "-p", port, "-t", "set", "--csv"])
        .args(["-c", &clients.to_string()])
        .args(["-r", &keys.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-P", &depth.to_string()])
        .output()
        .map_err(|e| {
            format!(
                "cannot run redis-benchmark ({e}); it comes with `apt-get install redis-server`"
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let unexpected = || format!("unexpected redis-benchmark output: {}", text.trim());
    let columns = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|c| c.trim_matches('"').to_owned())
            .collect()
    };
    let row = text
        .lines()
        .find(|l| l.starts_with("\"SET\""))
        .map(columns)
        .ok_or_else(unexpected)?;
    let rps = row
        .get(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(unexpected)?;
    // --csv header: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    let p50 = text
        .lines()
        .find(|l| l.starts_with("\"test\""))
        .map(columns)
        .and_then(|header| header.iter().position(|h| h == "p50_latency_ms"))
        .and_then(|at| row.get(at))
        .and_then(|v| v.parse().ok());
    Ok((rps, p50))
}
