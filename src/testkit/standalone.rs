//! [`StandaloneServer`]: one non-cluster `redis-server`, for code paths that
//! must also work without a cluster.

use std::path::PathBuf;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::TestkitError;
use super::server::{self, NodeSetup, RedisProcess};

/// How to start a [`StandaloneServer`].
#[derive(Debug, Clone, Default)]
pub struct StandaloneSpec {
    /// `requirepass` (the URL then carries it).
    pub password: Option<String>,
    /// The `redis-server` binary; `None` looks at `$SHARDLOCK_REDIS_SERVER`,
    /// then `PATH`.
    pub redis_server: Option<PathBuf>,
}

/// A single non-cluster `redis-server` (`cluster-enabled no`) in its own
/// temporary directory; dropping it kills the process and removes the
/// directory.
#[derive(Debug)]
pub struct StandaloneServer {
    // Declared before `_dir`: the process dies before its directory goes.
    process: RedisProcess,
    _dir: TempDir,
}

impl StandaloneServer {
    /// Starts a server without a password.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(StandaloneSpec::default()).await
    }

    /// Starts a server that requires `pw` (`requirepass`).
    pub async fn start_with_password(pw: &str) -> Result<Self, TestkitError> {
        Self::start_with(StandaloneSpec {
            password: Some(pw.to_owned()),
            ..StandaloneSpec::default()
        })
        .await
    }

    /// Starts a server as `spec` says and waits until it answers `PING`.
    pub async fn start_with(spec: StandaloneSpec) -> Result<Self, TestkitError> {
        let binary = server::find_redis_server(spec.redis_server.as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("shardlock-testkit-")
            .tempdir()?;
        let setup = NodeSetup {
            binary,
            dir: dir.path().join("standalone"),
            password: spec.password,
            cluster_node_timeout: None,
            proxied: None,
        };
        let mut nodes = server::launch_all(vec![setup]).await?;
        let process = nodes
            .pop()
            .ok_or_else(|| TestkitError::Unexpected("no process launched".to_owned()))?;
        Ok(StandaloneServer { process, _dir: dir })
    }

    /// `redis://127.0.0.1:PORT` (with `:password@` when one is set).
    pub fn url(&self) -> String {
        self.process.url().to_owned()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.process.addr().to_owned()
    }

    /// The OS pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `SIGKILL`s the server and reaps it (no-op if it is not running).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// `SIGSTOP`: the server stops answering but keeps its connections.
    pub fn pause(&self) -> Result<(), TestkitError> {
        self.process.signal(Signal::SIGSTOP)
    }

    /// `SIGCONT` after [`StandaloneServer::pause`].
    pub fn resume(&self) -> Result<(), TestkitError> {
        self.process.signal(Signal::SIGCONT)
    }

    /// Kills the server if it runs and starts it again on the same port
    /// (empty: nothing is persisted); waits until it answers `PING`.
    pub async fn restart(&self) -> Result<(), TestkitError> {
        self.process.restart().await
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
