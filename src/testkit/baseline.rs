//! The baseline that benchmarks compare against: `redis-benchmark` on the
//! same cluster in the same run.

use std::process::Command;

use super::TestkitError;

/// Runs `redis-benchmark --cluster -t set` against the node at `addr`
/// (`host:port`) with `clients` connections, `keys` random keys and
/// `requests` requests in all, unpipelined, and returns its requests per
/// second.
pub fn redis_benchmark_set(
    addr: &str,
    clients: usize,
    keys: u64,
    requests: u64,
) -> Result<f64, TestkitError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| TestkitError::InvalidArgument(format!("{addr:?} is not host:port")))?;
    let output = Command::new("redis-benchmark")
        .args(["--cluster", "-h", host, "-p", port, "-t", "set", "--csv"])
        .args(["-c", &clients.to_string()])
        .args(["-r", &keys.to_string()])
        .args(["-n", &requests.to_string()])
        .output()
        .map_err(|e| {
            TestkitError::Unexpected(format!(
                "cannot run redis-benchmark ({e}); it comes with `apt-get install redis-server`"
            ))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    // --csv: a header line, then "SET","<requests per second>",...
    text.lines()
        .find(|l| l.starts_with("\"SET\""))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .ok_or_else(|| {
            TestkitError::Unexpected(format!("unexpected redis-benchmark output: {text}"))
        })
}
