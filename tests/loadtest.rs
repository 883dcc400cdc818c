//! The load-test binary, run as a user would run it: bad options are refused
//! with one line and exit status 2; short runs against an embedded cluster
//! write a complete JSON report with no violations.

use std::path::PathBuf;
use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlock-loadtest"))
        .args(args)
        .output()
        .expect("the load-test binary runs")
}

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shardlock-loadtest-{}-{name}.json",
        std::process::id()
    ))
}

/// Runs the binary with `args` plus `--json <tmp>`, expects success, and
/// returns the parsed report.
fn run_report(name: &str, args: &[&str]) -> serde_json::Value {
    let path = json_path(name);
    let mut all = args.to_vec();
    let path_text = path.to_str().expect("temp paths are UTF-8").to_owned();
    all.extend(["--json", &path_text]);
    let out = loadtest(&all);
    assert!(
        out.status.success(),
        "loadtest {all:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("violations: 0"), "{stdout}");
    let text = std::fs::read_to_string(&path).expect("the JSON report was written");
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&text).expect("the report is JSON")
}

/// A metrics address already in use is refused before anything starts:
/// exit status 2, one line naming the address.
#[test]
fn busy_metrics_address_exits_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = loadtest(&["--metrics-addr", &addr, "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

/// Every nonsense option is refused with exit status 2 and one line naming it.
#[test]
fn bad_options_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--workers", "0"], "--workers"),
        (&["--keys", "0"], "--keys"),
        (&["--distribution", "zipf:0"], "zipf"),
        (&["--distribution", "zipf:-1.5"], "zipf"),
        (&["--distribution", "pareto"], "--distribution"),
        (&["--duration", "0"], "--duration"),
        (&["--duration", "0s"], "--duration"),
        (&["--duration", "soon"], "--duration"),
        (&["--ttl", "10 parsecs"], "--ttl"),
        (&["--hold", "5ms..1ms"], "--hold"),
        (&["--mode", "grab"], "--mode"),
        (&["--mode", "many:0"], "--mode"),
        (&["--rate", "0"], "--rate"),
        (&["--workers", "lots"], "--workers"),
        (&["--seeds", "localhost:7000"], "--seeds"),
        (&["--chaos", "explode@1s"], "--chaos"),
        (&["--no-such-option"], "--no-such-option"),
        (&["--runtime", "fast"], "--runtime"),
        (&["--metrics-addr", "localhost"], "--metrics-addr"),
        (&["--redlock", "4"], "--redlock"),
        (&["--redlock", "1"], "--redlock"),
        (&["--redlock", "3", "--mode", "fenced"], "--redlock"),
        (&["--redlock-chaos", "kill@1s"], "--redlock-chaos"),
        (
            &["--redlock", "3", "--redlock-chaos", "failover@1s"],
            "--redlock-chaos",
        ),
        (
            &[
                "--redlock",
                "3",
                "--redlock-chaos",
                "kill@1s",
                "--redlock-chaos",
                "kill@1s",
                "--redlock-chaos",
                "kill@1s",
            ],
            "--redlock-chaos",
        ),
        (
            &["--seeds", "redis://127.0.0.1:1", "--duration", "1s"],
            "127.0.0.1:1",
        ),
        (&["--duration", "2s", "--chaos", "kill@5s"], "--chaos"),
        (&["--chaos", "pause-client@1s"], "--processes"),
        (&["--chaos", "pause-client@1s:0"], "--chaos"),
        (&["--chaos", "kill@1s:2s"], "--chaos"),
        (&["--processes", "0"], "--processes"),
        (&["--processes", "3", "--workers", "2"], "--processes"),
        (&["--resource", "--mode", "many:2"], "--resource"),
        (&["--processes", "2", "--redlock", "3"], "--redlock"),
    ];
    for (args, named) in cases {
        let out = loadtest(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A missing redis-server is one line naming the package, exit status 2.
#[test]
fn missing_redis_server_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardlock-loadtest"))
        .args(["--duration", "1s"])
        .env("PATH", "/nonexistent")
        .env_remove("SHARDLOCK_REDIS_SERVER")
        .output()
        .expect("the load-test binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.contains("apt-get install redis-server"), "{stderr}");
}

/// A short embedded run reports every documented field with sane values
/// and no mutual-exclusion violation.
#[test]
fn short_run_reports_every_field() {
    let report = run_report(
        "short",
        &["--duration", "3s", "--workers", "20", "--seed", "7"],
    );
    for field in [
        "cycles",
        "cycles_per_sec",
        "failed_acquires",
        "errors",
        "lost_leases",
        "violations",
        "acquire_p50_ms",
        "acquire_p99_ms",
        "cycle_p50_ms",
        "cycle_p99_ms",
        "client_cpu_us_per_cycle",
        "server_cpu_us_per_cycle",
        "duration_s",
        "contention_rate",
        "acquire_p90_ms",
        "acquire_p999_ms",
        "acquire_max_ms",
        "hold_p50_ms",
        "redis_commands_per_acquire",
        "errors_by_kind",
        "redirects",
        "topology_refreshes",
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    let num = |f: &str| {
        report[f]
            .as_f64()
            .unwrap_or_else(|| panic!("{f}: {report}"))
    };
    assert!(num("cycles") > 100.0, "{report}");
    assert!(num("cycles_per_sec") > 0.0);
    assert_eq!(num("violations"), 0.0);
    assert_eq!(num("errors"), 0.0);
    assert_eq!(num("lost_leases"), 0.0);
    assert!((2.5..10.0).contains(&num("duration_s")), "{report}");
    assert!(num("acquire_p50_ms") > 0.0);
    assert!(num("acquire_p50_ms") <= num("acquire_p99_ms"));
    assert!(num("cycle_p50_ms") >= num("acquire_p50_ms"));
    assert!(num("client_cpu_us_per_cycle") > 0.0);
    assert!(num("server_cpu_us_per_cycle") > 0.0);
    // Try mode: a SET and a release script per cycle on a primary; Redis
    // counts the calls made inside the script too (GET, DEL).
    let commands = num("redis_commands_per_acquire");
    assert!((1.9..6.0).contains(&commands), "{report}");
    let attempts = num("client_attempts_per_acquire");
    assert!((1.9..2.5).contains(&attempts), "{report}");
    // 20 workers on auto-pipelined connections: requests share writes.
    assert!(num("client_attempts_per_write") > 1.0, "{report}");
}

/// `--redlock 3` runs the same workload on three standalone servers after
/// the cluster run and reports it beside it: cycles, no violations, and
/// the same figures in the JSON report. One instance killed during it
/// leaves a majority: no errors.
#[test]
fn redlock_phase_reports_beside_the_cluster_run() {
    let report = run_report(
        "redlock",
        &[
            "--duration",
            "2s",
            "--workers",
            "8",
            "--keys",
            "50",
            "--redlock",
            "3",
            "--redlock-chaos",
            "kill@1s",
        ],
    );
    let redlock = &report["redlock"];
    assert_eq!(redlock["instances"], 3, "{report}");
    assert_eq!(redlock["quorum"], 2);
    assert_eq!(
        redlock["killed"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(redlock["cycles"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(redlock["violations"], 0, "{report}");
    assert_eq!(redlock["errors"], 0, "{report}");
    assert!(redlock["acquire_p50_ms"].as_f64().unwrap() > 0.0);
    assert!(
        redlock["acquire_p50_ms"].as_f64() <= redlock["acquire_p999_ms"].as_f64(),
        "{report}"
    );
    assert!((0.0..=1.0).contains(&redlock["contention_rate"].as_f64().unwrap()));
    assert!(redlock["server_cpu_us_per_cycle"].as_f64().unwrap() > 0.0);
}

/// Fenced acquisitions under contention (few keys) issue tokens that only
/// grow per key, and no two workers overlap, also on a current-thread
/// runtime.
#[test]
fn fenced_run_has_no_violations() {
    let report = run_report(
        "fenced",
        &[
            "--duration",
            "3s",
            "--workers",
            "10",
            "--keys",
            "50",
            "--mode",
            "fenced",
            "--hold",
            "0..1ms",
            "--runtime",
            "current",
        ],
    );
    assert_eq!(report["violations"], 0, "{report}");
    assert_eq!(report["token_regressions"], 0, "{report}");
    assert!(report["cycles"].as_u64().unwrap_or(0) > 100, "{report}");
    assert!(
        report["failed_acquires"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}

/// A run with a failover and a slot migration completes and reports, for
/// each fault, the longest gap without an acquire on the affected shard.
#[test]
fn chaos_run_reports_the_window() {
    let report = run_report(
        "chaos",
        &[
            "--duration",
            "6s",
            "--workers",
            "10",
            "--chaos",
            "failover@1s",
            "--chaos",
            "migrate@3s",
        ],
    );
    let chaos = report["chaos"].as_array().expect("a chaos list");
    assert_eq!(chaos.len(), 2, "{report}");
    for fault in chaos {
        assert!(fault["error"].is_null(), "{fault}");
        let gap = fault["unavailable_s"].as_f64().expect("a window");
        assert!((0.0..6.0).contains(&gap), "{fault}");
    }
    assert_eq!(report["chaos"][0]["fault"], "failover");
    assert_eq!(report["chaos"][1]["fault"], "migrate");
}

/// `--json <dir>/r.json` also writes `<dir>/r.svg`: an SVG with a line per
/// series (cycles/s, acquire p50, acquire p99) and the chaos event labelled.
#[test]
fn json_run_writes_a_plot_next_to_it() {
    let dir = std::env::temp_dir().join(format!("shardlock-loadtest-{}-plot", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let json = dir.join("r.json");
    let svg = dir.join("r.svg");
    let json_text = json.to_str().expect("temp paths are UTF-8");
    let out = loadtest(&[
        "--duration",
        "3s",
        "--workers",
        "10",
        "--json",
        json_text,
        "--chaos",
        "failover@1s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report"))
            .expect("the report is JSON");
    assert_eq!(report["plot"], svg.to_str().expect("UTF-8"), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(svg.to_str().expect("UTF-8")),
        "the human report names the plot"
    );
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        plot.starts_with("<svg") || plot.starts_with("<?xml"),
        "{plot}"
    );
    assert!(plot.trim_end().ends_with("</svg>"), "{plot}");
    for series in ["cycles_per_sec", "acquire_p50_ms", "acquire_p99_ms"] {
        let at = plot
            .find(&format!(r#"data-series="{series}" d="M"#))
            .unwrap_or_else(|| panic!("no line for {series}: {plot}"));
        assert!(plot[..at].ends_with("<path class=\"series\" "), "{plot}");
    }
    assert!(plot.contains(">failover @"), "{plot}");
}

/// The observer's fields, overall and per fault window.
const OBSERVER_FIELDS: [&str; 8] = [
    "overlapping_holds",
    "stale_writes_rejected",
    "stale_writes_accepted",
    "fresh_writes_rejected",
    "lost_leases_reported",
    "unreported_losses",
    "orphaned_leases",
    "unreleased_leases",
];

/// Two client processes writing to the fenced protected resource, no
/// faults: every holder's write is accepted in order, no two holders of
/// one key overlap (across processes), nothing is left in the cluster,
/// and the report has every observer field and both processes.
#[test]
fn two_processes_with_a_resource_are_safe_and_report_every_field() {
    let report = run_report(
        "processes",
        &[
            "--duration",
            "3s",
            "--workers",
            "8",
            "--keys",
            "50",
            "--processes",
            "2",
            "--resource",
        ],
    );
    for field in OBSERVER_FIELDS {
        assert!(report[field].is_u64(), "missing {field}: {report}");
    }
    assert!(report["fault_windows"].as_array().is_some(), "{report}");
    assert_eq!(report["overlapping_holds"], 0, "{report}");
    assert_eq!(report["stale_writes_accepted"], 0, "{report}");
    assert_eq!(report["stale_writes_rejected"], 0, "{report}");
    assert_eq!(report["unreported_losses"], 0, "{report}");
    assert_eq!(report["orphaned_leases"], 0, "{report}");
    assert_eq!(report["unreleased_leases"], 0, "{report}");
    assert_eq!(report["mode"], "fenced", "{report}");
    let processes = report["per_process"]
        .as_array()
        .expect("per-process figures");
    assert_eq!(processes.len(), 2, "{report}");
    let mut cycles = 0;
    for p in processes {
        assert_eq!(p["exit"], "exit 0", "{p}");
        assert!(p["cycles"].as_u64().unwrap_or(0) > 10, "{p}");
        cycles += p["cycles"].as_u64().unwrap_or(0);
    }
    // The merged figure is the sum of the processes'.
    assert_eq!(report["cycles"].as_u64(), Some(cycles), "{report}");
    // One write per lease, and each was answered.
    assert_eq!(report["writes"], report["leases"], "{report}");
    assert!(report["writes"].as_u64().unwrap_or(0) >= cycles, "{report}");
    assert_eq!(report["failed_writes"], 0, "{report}");
}

/// A client process paused (SIGSTOP) for 3 s, longer than the 1 s TTL,
/// while its workers sit in the 5 ms "work" between the guard check and
/// the write: the other process takes those keys once they expire and
/// writes with higher tokens, so the paused holders' late writes are
/// unreported losses, and the resource refuses them — none is accepted.
/// It is certain because 6 workers per process on 20 keys spend most of
/// each cycle in that work (a pause that finds none of the 6 there is
/// vanishingly rare), and the other process's ~700 cycles/s over 20 keys
/// reach every expired key within the pause.
#[test]
fn a_paused_client_writes_late_and_fencing_rejects_it() {
    let report = run_report(
        "pause",
        &[
            "--duration",
            "5s",
            "--workers",
            "12",
            "--keys",
            "20",
            "--processes",
            "2",
            "--resource",
            "--ttl",
            "1s",
            "--chaos",
            "pause-client@1s:3s",
        ],
    );
    assert_eq!(report["stale_writes_accepted"], 0, "{report}");
    let unreported = report["unreported_losses"].as_u64().unwrap_or(0);
    let rejected = report["stale_writes_rejected"].as_u64().unwrap_or(0);
    assert!(unreported > 0 || rejected > 0, "{report}");
    let windows = report["fault_windows"].as_array().expect("fault windows");
    assert_eq!(windows.len(), 1, "{report}");
    assert_eq!(windows[0]["name"], "pause-client", "{report}");
    for field in &OBSERVER_FIELDS[..6] {
        assert!(windows[0][field].is_u64(), "window lacks {field}: {report}");
    }
    assert_eq!(windows[0]["stale_writes_accepted"], 0, "{report}");
    assert!(
        windows[0]["unreported_losses"].as_u64().unwrap_or(0) > 0
            || windows[0]["stale_writes_rejected"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}
