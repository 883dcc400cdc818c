//! One `redis-server` process: finding the binary, free ports, spawning,
//! signals, restart, and the `Drop` that never leaves it behind.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::TestkitError;
use super::wire;

/// How long a fresh process may take to answer `PING`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a node is re-spawned on new ports when it exits at startup
/// (another process may take a port between our probe and its bind).
const SPAWN_ATTEMPTS: usize = 5;
/// How much of a log the error messages quote.
const LOG_TAIL_BYTES: u64 = 4096;

/// Where the `redis-server` binary is: `explicit` if given, else
/// `$SHARDLOCK_REDIS_SERVER`, else `redis-server` on `PATH`.
pub(super) fn find_redis_server(explicit: Option<&Path>) -> Result<PathBuf, TestkitError> {
    let not_found = |looked_for: String| TestkitError::RedisServerNotFound { looked_for };
    if let Some(path) = explicit {
        return is_executable(path)
            .then(|| path.to_path_buf())
            .ok_or_else(|| not_found(path.display().to_string()));
    }
    if let Some(path) = std::env::var_os("SHARDLOCK_REDIS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return is_executable(&path)
            .then(|| path.clone())
            .ok_or_else(|| not_found(format!("$SHARDLOCK_REDIS_SERVER={}", path.display())));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| not_found("redis-server on PATH".to_owned()))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `n` distinct loopback ports that were free a moment ago. All listeners are
/// held until every port is chosen, so the ports differ from each other.
fn free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// How to start one node; its ports are chosen at spawn time.
#[derive(Debug, Clone)]
pub(super) struct NodeSetup {
    pub(super) binary: PathBuf,
    /// The node's own directory (`nodes.conf`, `redis.log`).
    pub(super) dir: PathBuf,
    pub(super) password: Option<String>,
    /// `cluster-node-timeout`; `None` starts a standalone server.
    pub(super) cluster_node_timeout: Option<Duration>,
    /// Behind proxies: the node's own loopback address and its fixed
    /// (client, bus) ports, whose `127.0.0.1` side the proxies hold. `None`:
    /// the node binds `127.0.0.1` on free ports.
    pub(super) proxied: Option<Proxied>,
}

/// Where a node behind proxies listens (see [`super::proxy`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Proxied {
    /// `127.0.0.(10+i)`: bound, and the source of its outgoing connections.
    pub(super) ip: Ipv4Addr,
    pub(super) port: u16,
    pub(super) bus_port: u16,
}

impl NodeSetup {
    fn ports_needed(&self) -> usize {
        if self.cluster_node_timeout.is_some() {
            2
        } else {
            1
        }
    }
}

/// A `redis-server` child process on fixed ports. Dropping it kills it.
///
/// It has two addresses, equal unless it is behind proxies: its public one
/// (`127.0.0.1:PORT`, what it announces, what clients and the other nodes
/// use) and its direct one (what it binds, used by the test kit's own
/// queries). Behind proxies both have the same port, on different IPs.
#[derive(Debug)]
pub(super) struct RedisProcess {
    setup: NodeSetup,
    port: u16,
    cluster_port: Option<u16>,
    /// Public: `127.0.0.1:PORT`.
    addr: String,
    url: String,
    /// Direct: `IP:PORT` the process binds.
    direct_addr: String,
    direct_url: String,
    /// `None` once the process has been killed and reaped.
    child: Mutex<Option<Child>>,
}

/// Why a process did not come up.
enum StartFailure {
    /// It exited (usually a port taken between probe and bind): retryable.
    Exited(String),
    /// It runs but never answered `PING`.
    Silent(String),
}

impl RedisProcess {
    /// Spawns on the given ports. `fresh` empties the directory first (a new
    /// node); otherwise `nodes.conf` is kept and the node rejoins.
    fn spawn(setup: NodeSetup, ports: &[u16], fresh: bool) -> Result<Self, TestkitError> {
        if fresh && setup.dir.exists() {
            fs::remove_dir_all(&setup.dir)?;
        }
        fs::create_dir_all(&setup.dir)?;
        let port = ports[0];
        let cluster_port = setup.cluster_node_timeout.map(|_| ports[1]);
        let ip = setup.proxied.map_or(Ipv4Addr::LOCALHOST, |p| p.ip);
        let process = RedisProcess {
            addr: format!("127.0.0.1:{port}"),
            url: wire::url(Ipv4Addr::LOCALHOST, port, setup.password.as_deref()),
            direct_addr: format!("{ip}:{port}"),
            direct_url: wire::url(ip, port, setup.password.as_deref()),
            setup,
            port,
            cluster_port,
            child: Mutex::new(None),
        };
        let child = process
            .command()?
            .spawn()
            .map_err(|e| TestkitError::Spawn {
                node: process.addr.clone(),
                reason: format!("{}: {e}", process.setup.binary.display()),
            })?;
        *process.lock() = Some(child);
        Ok(process)
    }

    fn command(&self) -> Result<Command, TestkitError> {
        let dir = &self.setup.dir;
        let ip = self.setup.proxied.map_or(Ipv4Addr::LOCALHOST, |p| p.ip);
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            ip.to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            self.log_path().display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--enable-debug-command".into(),
            "local".into(),
        ];
        if let (Some(timeout), Some(cluster_port)) =
            (self.setup.cluster_node_timeout, self.cluster_port)
        {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-port".into(),
                cluster_port.to_string(),
                "--cluster-config-file".into(),
                "nodes.conf".into(),
                "--cluster-node-timeout".into(),
                timeout.as_millis().to_string(),
                "--cluster-allow-replica-migration".into(),
                "no".into(),
            ]);
        }
        if let Some(proxied) = self.setup.proxied {
            // Redis 7.0 makes its cluster-bus and replication connections
            // from `bind-source-addr` (checked with `ss -tnp`), which is how
            // a proxy tells the nodes apart. `MIGRATE` and other blocking
            // connects do not use it.
            args.extend([
                "--bind-source-addr".into(),
                proxied.ip.to_string(),
                "--cluster-announce-ip".into(),
                "127.0.0.1".into(),
                "--cluster-announce-port".into(),
                proxied.port.to_string(),
                "--cluster-announce-bus-port".into(),
                proxied.bus_port.to_string(),
            ]);
        }
        if let Some(pw) = &self.setup.password {
            args.extend([
                "--requirepass".into(),
                pw.clone(),
                "--masterauth".into(),
                pw.clone(),
            ]);
        }
        // Startup errors (bad config) go to stderr, not to the log file.
        let stdio = File::options()
            .create(true)
            .append(true)
            .open(self.stdio_path())?;
        let mut cmd = Command::new(&self.setup.binary);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdio.try_clone()?)
            .stderr(stdio);
        Ok(cmd)
    }

    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The URL of [`RedisProcess::direct_addr`].
    pub(super) fn direct_url(&self) -> &str {
        &self.direct_url
    }

    /// The IP the process binds (`127.0.0.1` unless proxied).
    pub(super) fn direct_ip(&self) -> Ipv4Addr {
        self.setup.proxied.map_or(Ipv4Addr::LOCALHOST, |p| p.ip)
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    fn log_path(&self) -> PathBuf {
        self.setup.dir.join("redis.log")
    }

    fn stdio_path(&self) -> PathBuf {
        self.setup.dir.join("stdio.log")
    }

    /// The last few KiB of the node's log (and of its stdout/stderr, if any).
    pub(super) fn log_tail(&self) -> String {
        let mut out = format!(
            "--- tail of {} ---\n{}",
            self.log_path().display(),
            tail(&self.log_path())
        );
        let stdio = tail(&self.stdio_path());
        if !stdio.trim().is_empty() {
            out.push_str(&format!("--- stdout/stderr ---\n{stdio}"));
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic elsewhere while holding the lock leaves the child handle
        // intact, so a poisoned lock is still safe to use (and Drop must work).
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The exit status if the process has exited (and reaps it).
    fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.lock();
        let status = child.as_mut()?.try_wait().ok().flatten()?;
        *child = None;
        Some(status)
    }

    /// The OS pid while the process runs (paused counts as running).
    pub(super) fn pid(&self) -> Option<u32> {
        let mut child = self.lock();
        match child.as_mut()?.try_wait() {
            Ok(None) => child.as_ref().map(Child::id),
            _ => {
                *child = None;
                None
            }
        }
    }

    /// `SIGKILL` and reap; nothing to do if it is not running.
    pub(super) fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            // Errors mean it is already gone; SIGKILL also ends a stopped process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` to the running process.
    pub(super) fn signal(&self, sig: Signal) -> Result<(), TestkitError> {
        let mut child = self.lock();
        // Holding the lock: the pid cannot be reaped (and reused) meanwhile.
        let running = match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        };
        let Some(c) = child.as_ref().filter(|_| running) else {
            *child = None;
            return Err(TestkitError::InvalidArgument(format!(
                "{} is not running",
                self.addr
            )));
        };
        let pid = i32::try_from(c.id())
            .map_err(|_| TestkitError::Unexpected(format!("pid {}", c.id())))?;
        signal::kill(Pid::from_raw(pid), sig).map_err(|errno| TestkitError::Io(errno.into()))
    }

    /// Polls `PING` until it answers, the process exits, or `timeout` passes.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let ping = redis::cmd("PING");
        loop {
            if let Some(status) = self.exited() {
                return Err(StartFailure::Exited(format!(
                    "exited at startup ({status})\n{}",
                    self.log_tail()
                )));
            }
            let last = match wire::query_once::<String>(
                &self.direct_addr,
                &self.direct_url,
                &ping,
                Duration::from_millis(250),
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(StartFailure::Silent(format!(
                    "no PONG within {timeout:?} (last: {last})\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process if it runs, then starts it again on the same ports
    /// and directory, and waits until it answers `PING`.
    pub(super) async fn restart(&self) -> Result<(), TestkitError> {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.command()?.spawn().map_err(|e| TestkitError::Spawn {
                node: self.addr.clone(),
                reason: format!("{}: {e}", self.setup.binary.display()),
            })?;
            *self.lock() = Some(child);
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_ready(left).await {
                Ok(()) => return Ok(()),
                // The old sockets may linger a moment; the ports are ours to reuse.
                Err(StartFailure::Exited(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(StartFailure::Exited(reason) | StartFailure::Silent(reason)) => {
                    self.kill();
                    return Err(TestkitError::Spawn {
                        node: self.addr.clone(),
                        reason,
                    });
                }
            }
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts every node, each on fresh free ports (or a proxied node's fixed
/// ones), and waits until all answer `PING`. A node on free ports that
/// exits at startup is retried on new ports; a proxied one is not (the
/// proxies hold its ports on `127.0.0.1`, so no other process can take them
/// on its own address). On error, the processes already started are
/// killed (dropped).
pub(super) async fn launch_all(setups: Vec<NodeSetup>) -> Result<Vec<RedisProcess>, TestkitError> {
    let per_node: Vec<usize> = setups.iter().map(NodeSetup::ports_needed).collect();
    let free: usize = setups
        .iter()
        .zip(&per_node)
        .filter(|(s, _)| s.proxied.is_none())
        .map(|(_, n)| n)
        .sum();
    let mut ports = free_ports(free)?.into_iter();
    let mut nodes = Vec::with_capacity(setups.len());
    for (setup, n) in setups.iter().zip(&per_node) {
        let mine: Vec<u16> = match setup.proxied {
            Some(p) => vec![p.port, p.bus_port],
            None => ports.by_ref().take(*n).collect(),
        };
        nodes.push(RedisProcess::spawn(setup.clone(), &mine, true)?);
    }
    // All processes boot in parallel; waiting in order costs the slowest.
    for (i, setup) in setups.iter().enumerate() {
        let mut attempt = 1;
        loop {
            match nodes[i].wait_ready(STARTUP_TIMEOUT).await {
                Ok(()) => break,
                Err(StartFailure::Exited(_))
                    if attempt < SPAWN_ATTEMPTS && setup.proxied.is_none() =>
                {
                    attempt += 1;
                    let fresh_ports = free_ports(per_node[i])?;
                    nodes[i] = RedisProcess::spawn(setup.clone(), &fresh_ports, true)?;
                }
                Err(StartFailure::Exited(reason) | StartFailure::Silent(reason)) => {
                    return Err(TestkitError::Spawn {
                        node: nodes[i].addr.clone(),
                        reason: format!("after {attempt} attempt(s): {reason}"),
                    });
                }
            }
        }
    }
    Ok(nodes)
}

/// The last [`LOG_TAIL_BYTES`] of a file, from a line start; empty if absent.
fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    match (start > 0, text.find('\n')) {
        (true, Some(nl)) => text[nl + 1..].to_owned(),
        _ => text.into_owned(),
    }
}
