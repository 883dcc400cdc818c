//! CPU and command counts: this process's from `/proc/self/stat` (no
//! unsafe getrusage call needed), the servers' from `INFO cpu` and
//! `INFO commandstats` on every node of the embedded cluster.

use std::time::Duration;

use shardlock::testkit::TestCluster;

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture Linux exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time used by this process (user + system) and by its waited-for
/// children (such as a finished redis-benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessCpu {
    pub(crate) own: Duration,
    pub(crate) children: Duration,
}

pub(crate) fn process_cpu() -> Option<ProcessCpu> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are
    // plain. utime, stime, cutime, cstime are fields 14–17.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let seconds = |ticks: f64| Duration::from_secs_f64(ticks / TICKS_PER_SECOND);
    Some(ProcessCpu {
        own: seconds(field(14)? + field(15)?),
        children: seconds(field(16)? + field(17)?),
    })
}

/// Totals over every live node of the embedded cluster.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServerCounters {
    /// CPU of every node, replicas included (replication is part of the cost).
    pub(crate) cpu: Duration,
    /// Commands executed by primaries (replicas only replay them).
    pub(crate) commands: u64,
}

pub(crate) async fn server_counters(cluster: &TestCluster) -> Option<ServerCounters> {
    let mut total = ServerCounters::default();
    for addr in cluster.addrs() {
        let Ok(reply) = cluster
            .command(
                &addr,
                redis::cmd("INFO")
                    .arg("cpu")
                    .arg("commandstats")
                    .arg("replication"),
            )
            .await
        else {
            continue; // killed or paused: skipped, as the testkit does
        };
        let text = match reply {
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            _ => return None,
        };
        let (cpu, commands) = parse_info(&text);
        total.cpu += Duration::from_secs_f64(cpu);
        if text.lines().any(|l| l.trim() == "role:master") {
            total.commands += commands;
        }
    }
    Some(total)
}

/// `used_cpu_sys + used_cpu_user` in seconds from an `INFO cpu` reply.
pub(crate) fn info_cpu_seconds(text: &str) -> f64 {
    parse_info(text).0
}

/// `used_cpu_sys + used_cpu_user` in seconds, and the sum of `calls=` over
/// `cmdstat_*` lines (the INFO command itself included).
fn parse_info(text: &str) -> (f64, u64) {
    let mut cpu = 0.0;
    let mut calls = 0;
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            cpu += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if line.starts_with("cmdstat_")
            && let Some(rest) = line.split("calls=").nth(1)
        {
            calls += rest
                .split(',')
                .next()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (cpu, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections_are_summed() {
        let text = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9.0\r\n\
                    # Commandstats\r\ncmdstat_set:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_evalsha:calls=7,usec=3\r\n";
        assert_eq!(parse_info(text), (3.75, 17));
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(process_cpu().is_some());
    }
}
