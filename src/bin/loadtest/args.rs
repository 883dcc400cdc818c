//! Command-line options and the parsers of their values (durations, ranges,
//! distributions, modes, chaos events). Every parser rejects nonsense with a
//! message that fits on one line; `main` prints it and exits with status 2.

use std::time::Duration;

use clap::Parser;

/// Load test for shardlock: lock cycles (acquire, hold, release) on many
/// keys, with a mutual-exclusion check, against an embedded local six-node
/// cluster or an existing one.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub(crate) struct Args {
    /// Concurrent workers, each running one cycle at a time.
    #[arg(long, default_value_t = 50, value_parser = at_least_one_usize)]
    pub(crate) workers: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one_u64)]
    pub(crate) keys: u64,
    /// How keys are chosen: `uniform`, or `zipf:<s>` with exponent s > 0.
    #[arg(long, default_value = "uniform", value_parser = parse_distribution)]
    pub(crate) distribution: Distribution,
    /// How long each lock is held: a duration (`0`, `2ms`) or a range
    /// drawn uniformly (`1ms..5ms`). Default 0, or 5ms with `--resource`
    /// (the "work" between the guard check and the write).
    #[arg(long, default_value = "0", value_parser = parse_hold)]
    pub(crate) hold: Hold,
    /// Lease length of every lock.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub(crate) ttl: Duration,
    /// `try` (one attempt), `wait:<d>` (wait up to d), `fenced` (one attempt
    /// with a fencing token), `many:<n>` (n keys at once, all or none).
    #[arg(long, default_value = "try", value_parser = parse_mode)]
    pub(crate) mode: Mode,
    /// Auto-renew leases while held (lost leases are counted).
    #[arg(long)]
    pub(crate) auto_renew: bool,
    /// How long to drive load (`30s`, `500ms`, `2m`).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub(crate) duration: Duration,
    /// Open loop at this many cycles per second in all: latency counts from
    /// each cycle's intended start (which includes the async timer's up to
    /// 1 ms of wake-up lateness). Without it, closed loop.
    #[arg(long, value_parser = positive_rate)]
    pub(crate) rate: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<std::path::PathBuf>,
    /// Write the plot (throughput and acquire p50/p99 per second, chaos
    /// events marked) as SVG to this file; by default next to `--json`
    /// (`out.json` → `out.svg`), and none without either.
    #[arg(long)]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// Seed of the key choices (each worker derives its own from it).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Nodes of an existing cluster, `redis://host:port,...`; without it a
    /// local cluster of 3 primaries + 3 replicas is started and removed.
    #[arg(long, value_delimiter = ',', value_parser = parse_seed)]
    pub(crate) seeds: Vec<String>,
    /// Also run redis-benchmark SET on the same cluster with as many
    /// clients, unpipelined and pipelined (`-P 16`), and print the ratios.
    #[arg(long)]
    pub(crate) compare_raw: bool,
    /// The tokio runtime the workers run on: `multi` (a worker thread per
    /// core) or `current` (one thread; fewer cross-thread wake-ups).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Multi)]
    pub(crate) runtime: RuntimeKind,
    /// Send every request in its own write instead of joining requests for
    /// one node that are submitted together (auto-pipelining, the default).
    #[arg(long)]
    pub(crate) no_auto_pipeline: bool,
    /// After the run, run the same workload for the same time with Redlock
    /// over N embedded standalone servers (odd, at least 3) and report it
    /// beside the single-cluster figures (modes try and wait only).
    #[arg(long, value_name = "N")]
    pub(crate) redlock: Option<usize>,
    /// Kill one more of the Redlock instances at this time into the Redlock
    /// phase: `kill@5s` (repeatable; with N instances, up to N/2 kills
    /// leave a majority, one more leaves none).
    #[arg(long, value_parser = parse_chaos)]
    pub(crate) redlock_chaos: Vec<Chaos>,
    /// Serve Prometheus metrics at `http://<addr>/metrics` while the run
    /// lasts (e.g. `127.0.0.1:9464`). Keys are labelled `key_class` `hot`
    /// (the first 1 % of key numbers, the most popular under zipf) or `cold`.
    #[arg(long)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// A fault at a time into the run: `failover@5s`, `kill@5s`,
    /// `migrate@5s` on the embedded cluster's primary of key 0, or
    /// `pause-client@5s[:3s]` (with `--processes` ≥ 2): SIGSTOP the last
    /// client process for the given time (default 3s), then SIGCONT
    /// (repeatable, combinable).
    #[arg(long, value_parser = parse_chaos)]
    pub(crate) chaos: Vec<Chaos>,
    /// Run the workers in N client processes (children of this one, each
    /// with its own lock manager and connections, `--workers` shared
    /// among them); the report merges their figures.
    #[arg(long, default_value_t = 1, value_parser = at_least_one_usize)]
    pub(crate) processes: usize,
    /// Start a standalone server as the protected resource: each holder
    /// checks its guard, works for `--hold`, then writes its fencing token
    /// there through a compare-and-set that refuses tokens below the
    /// highest one it took. Implies `--mode fenced`. The report then has
    /// the outside observer's figures; a stale write accepted makes the
    /// exit status 1.
    #[arg(long)]
    pub(crate) resource: bool,
    /// The run is expected to break the safety claim (e.g. servers' clocks
    /// skewed on purpose): stale writes accepted do not make the exit
    /// status 1.
    #[arg(long)]
    pub(crate) expect_unsafe: bool,
    /// Internal: run as client process INDEX of a `--processes` run.
    #[arg(long, hide = true)]
    pub(crate) child: Option<usize>,
    /// Internal: where a client process writes its results.
    #[arg(long, hide = true)]
    pub(crate) child_dir: Option<std::path::PathBuf>,
    /// Internal: the parent's pid (a client process dies with it).
    #[arg(long, hide = true)]
    pub(crate) parent_pid: Option<i32>,
    /// Internal: the protected resource's URL.
    #[arg(long, hide = true)]
    pub(crate) resource_url: Option<String>,
    /// Internal: the load's start on CLOCK_MONOTONIC, ns.
    #[arg(long, hide = true)]
    pub(crate) start_at_ns: Option<u64>,
}

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Distribution {
    Uniform,
    /// Key k (from 1) has weight 1 / k^s.
    Zipf(f64),
}

/// How long a worker holds each lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// How a cycle takes its lock(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Try,
    Wait(Duration),
    Fenced,
    Many(usize),
}

/// A fault and when it happens, from the start of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chaos {
    pub(crate) kind: ChaosKind,
    pub(crate) at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChaosKind {
    Failover,
    Kill,
    Migrate,
    /// SIGSTOP a client process for this long, then SIGCONT.
    PauseClient(Duration),
}

/// How long `pause-client@T` pauses without `:dur`.
pub(crate) const DEFAULT_CLIENT_PAUSE: Duration = Duration::from_secs(3);

impl std::fmt::Display for ChaosKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChaosKind::Failover => "failover",
            ChaosKind::Kill => "kill",
            ChaosKind::Migrate => "migrate",
            ChaosKind::PauseClient(_) => "pause-client",
        })
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Try => f.write_str("try"),
            Mode::Wait(d) => write!(f, "wait:{d:?}"),
            Mode::Fenced => f.write_str("fenced"),
            Mode::Many(n) => write!(f, "many:{n}"),
        }
    }
}

/// Parses `0`, `250us`, `500ms`, `1.5s`, `2m`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be above zero".into()),
        d => Ok(d),
    }
}

fn at_least_one_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least_one_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_distribution(s: &str) -> Result<Distribution, String> {
    if s == "uniform" {
        return Ok(Distribution::Uniform);
    }
    let Some(exponent) = s.strip_prefix("zipf:") else {
        return Err(format!("{s:?}: use uniform or zipf:<s>"));
    };
    match exponent.parse::<f64>() {
        Ok(e) if e.is_finite() && e > 0.0 => Ok(Distribution::Zipf(e)),
        Ok(_) => Err(format!("zipf exponent {exponent} must be above zero")),
        Err(_) => Err(format!("zipf exponent {exponent:?} is not a number")),
    }
}

fn parse_hold(s: &str) -> Result<Hold, String> {
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
        None => {
            let d = parse_duration(s)?;
            (d, d)
        }
    };
    if min > max {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    Ok(Hold { min, max })
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "try" => return Ok(Mode::Try),
        "fenced" => return Ok(Mode::Fenced),
        _ => {}
    }
    if let Some(d) = s.strip_prefix("wait:") {
        return Ok(Mode::Wait(parse_duration(d)?));
    }
    if let Some(n) = s.strip_prefix("many:") {
        return match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Mode::Many(n)),
            _ => Err(format!("many:{n}: the key count must be a number ≥ 1")),
        };
    }
    Err(format!("{s:?}: use try, wait:<d>, fenced or many:<n>"))
}

fn parse_seed(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{s:?} must look like redis://host:port"))?;
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} must look like redis://host:port")),
    }
}

fn parse_chaos(s: &str) -> Result<Chaos, String> {
    let (kind, when) = s.split_once('@').ok_or_else(|| {
        format!("{s:?}: use failover@5s, kill@5s, migrate@5s or pause-client@5s:3s")
    })?;
    let (at, length) = match when.split_once(':') {
        Some((at, length)) => (at, Some(positive_duration(length)?)),
        None => (when, None),
    };
    let kind = match (kind, length) {
        ("failover", None) => ChaosKind::Failover,
        ("kill", None) => ChaosKind::Kill,
        ("migrate", None) => ChaosKind::Migrate,
        ("pause-client", length) => ChaosKind::PauseClient(length.unwrap_or(DEFAULT_CLIENT_PAUSE)),
        ("failover" | "kill" | "migrate", Some(_)) => {
            return Err(format!("{s:?}: only pause-client takes a length"));
        }
        (other, _) => {
            return Err(format!(
                "unknown fault {other:?} (failover, kill, migrate, pause-client)"
            ));
        }
    };
    Ok(Chaos {
        kind,
        at: parse_duration(at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn options_reject_nonsense() {
        assert!(parse_distribution("zipf:0").is_err());
        assert!(parse_distribution("zipf:-1").is_err());
        assert_eq!(parse_distribution("zipf:1.1"), Ok(Distribution::Zipf(1.1)));
        assert!(parse_hold("5ms..1ms").is_err());
        assert_eq!(parse_mode("many:3"), Ok(Mode::Many(3)));
        assert!(parse_mode("many:0").is_err());
        assert!(parse_seed("localhost:7000").is_err());
        assert!(parse_chaos("explode@1s").is_err());
        assert!(parse_chaos("kill@1s:2s").is_err());
        assert!(parse_chaos("pause-client@1s:0").is_err());
    }

    #[test]
    fn client_pauses_parse_with_and_without_a_length() {
        assert_eq!(
            parse_chaos("pause-client@1s:500ms"),
            Ok(Chaos {
                kind: ChaosKind::PauseClient(Duration::from_millis(500)),
                at: Duration::from_secs(1),
            })
        );
        assert_eq!(
            parse_chaos("pause-client@2s").map(|c| c.kind),
            Ok(ChaosKind::PauseClient(DEFAULT_CLIENT_PAUSE))
        );
    }
}

/// Which tokio runtime drives the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// `new_multi_thread`: one worker thread per core.
    Multi,
    /// `new_current_thread`: everything on one thread.
    Current,
}
