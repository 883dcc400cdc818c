//! The errors callers can match on.

use std::fmt;
use std::time::Duration;

use crate::redirect::{FailCause, RetryCause};
use crate::topology::TopologyError;

/// Everything a shardlock call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was rejected before anything was sent to Redis.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The lock is held by someone else and the request did not wait.
    #[error("the lock is held by another holder")]
    Contended,

    /// The lock stayed held by someone else for the whole wait.
    #[error("the lock stayed held by another holder for {waited:?}")]
    Timeout {
        /// How long the request waited.
        waited: Duration,
    },

    /// The lease is no longer held: it expired, was lost, or was released.
    #[error("the lease is not held (expired, lost or already released)")]
    NotHeld,

    /// The lease was taken but fewer replicas than asked acknowledged it in
    /// time; it has been released again.
    #[error("only {acked} of {wanted} replicas acknowledged the lease in time; it was released")]
    ReplicationTimeout {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas asked for.
        wanted: u64,
    },

    /// A Redlock acquire could not reach a quorum of instances because too
    /// many failed or did not answer in time (not because the lock was
    /// held); whatever it took was released again.
    #[error(
        "only {acquired} of the {needed} instances needed for a quorum were locked; {unavailable} failed or did not answer in time"
    )]
    NoQuorum {
        /// Instances on which the lock was taken.
        acquired: usize,
        /// Instances a quorum needs (a majority).
        needed: usize,
        /// Instances that failed or timed out.
        unavailable: usize,
    },

    /// No seed (nor any node known before) answered with a usable topology.
    #[error("no node reachable: {}", NodeFailures(.0))]
    NoNodeReachable(Vec<NodeFailure>),

    /// A node refused our credentials.
    #[error("authentication failed at {addr}: {message}")]
    Auth {
        /// The node, `host:port`.
        addr: String,
        /// What the server said.
        message: String,
    },

    /// A server older than shardlock supports (Redis 7.0: `SET … NX … GET`
    /// and `CLUSTER SHARDS`), found when it was asked for the slot map.
    #[error(
        "{addr} runs Redis {version}; shardlock needs Redis {minimum} or later (SET NX GET, CLUSTER SHARDS)"
    )]
    UnsupportedServer {
        /// The node, `host:port`.
        addr: String,
        /// The version it reported (or why it could not be told).
        version: String,
        /// The oldest supported version, `"7.0"`.
        minimum: &'static str,
    },

    /// The request's deadline passed while it was being retried; `last`
    /// names what kept it from succeeding.
    #[error("deadline exceeded after {attempts} attempt(s) in {elapsed:?}; last: {last}")]
    DeadlineExceeded {
        /// Attempts made, the first one included.
        attempts: u32,
        /// Time from the first attempt until giving up.
        elapsed: Duration,
        /// The last retryable condition met.
        last: RetryCause,
    },

    /// The server answered with an error that retrying does not cure.
    #[error("server error: {code} {message}")]
    Server {
        /// The error code, e.g. `WRONGTYPE`.
        code: String,
        /// The rest of the error line.
        message: String,
    },

    /// A reply was not what the protocol or the command promises.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),

    /// A topology reply could not be used.
    #[error("topology: {0}")]
    Topology(#[from] TopologyError),

    /// The background release still had leases to decide when the wait of
    /// [`LockManager::flush_releases`](crate::LockManager::flush_releases)
    /// ended.
    #[error("background releases still pending after {waited:?}")]
    ReleasesPending {
        /// How long the call waited.
        waited: Duration,
    },

    /// A background task that this call depends on has stopped.
    #[error("the {0} task has stopped")]
    Stopped(&'static str),

    /// Any other client-side failure.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Maps a non-retryable cause met at `addr` to the public error.
    pub(crate) fn from_fail(cause: FailCause, addr: &str) -> Error {
        match cause {
            FailCause::Server { code, message } => Error::Server { code, message },
            FailCause::Auth(message) => Error::Auth {
                addr: addr.to_owned(),
                message,
            },
            FailCause::Protocol(m) => Error::UnexpectedReply(format!("from {addr}: {m}")),
            FailCause::Other(m) => Error::Other(format!("{addr}: {m}")),
        }
    }
}

/// One node that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node, `host:port`.
    pub addr: String,
    /// Why it could not be used.
    pub cause: NodeFailureCause,
}

/// Why a node could not be used for a topology fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeFailureCause {
    /// Retryable: refused, reset, timed out, loading, …
    Unavailable(RetryCause),
    /// It answered, but not as a Redis node that can serve us.
    Failed(FailCause),
    /// Its topology reply could not be used.
    BadTopology(String),
    /// It runs a server version older than the minimum (7.0); the string
    /// is the version it reported, or why it could not be told.
    Unsupported(String),
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            NodeFailureCause::Unavailable(c) => write!(f, "{}: {c}", self.addr),
            NodeFailureCause::Failed(c) => write!(f, "{}: {c}", self.addr),
            NodeFailureCause::BadTopology(m) => write!(f, "{}: bad topology: {m}", self.addr),
            NodeFailureCause::Unsupported(v) => write!(
                f,
                "{}: runs Redis {v}; Redis {} or later is needed",
                self.addr,
                crate::topology::server::MIN_VERSION_TEXT
            ),
        }
    }
}

struct NodeFailures<'a>(&'a [NodeFailure]);

impl fmt::Display for NodeFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no nodes to try");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
