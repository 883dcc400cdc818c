//! What to do with a reply: the router's retry decisions, as data.
//!
//! [`classify`] looks at the outcome of one attempt (the replies of a
//! pipeline, or the transport error that ended it) and returns an
//! [`Action`]. It has no I/O and no state, so every rule is a row in the
//! table tests below; the router is one loop that acts on the answer.
//!
//! Rules, in order:
//! - the first error reply of a pipeline decides (all commands of one request
//!   are for one slot, so they share their fate);
//! - `MOVED slot addr` → [`Action::Moved`]: the slot has a new owner;
//! - `ASK slot addr` → [`Action::Ask`]: one request goes to `addr` after
//!   `ASKING`, the slot map stays as it is;
//! - `TRYAGAIN` → [`Action::TryAgain`]: a multi-key request met a slot
//!   half-way through migration; back off and resend;
//! - `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `READONLY` and transport
//!   failures (refused, reset, timed out) → [`Action::Refresh`]: the map may
//!   be stale; back off, refresh, resend;
//! - `BUSY` (a script or function runs past `busy-reply-threshold`) and
//!   `NOREPLICAS` (fewer replicas than `min-replicas-to-write`) →
//!   [`Action::Refresh`] too: the server refused the command before running
//!   it, so resending after a backoff is safe and may succeed once the
//!   script ends or the replicas are back; the refresh hint is coalesced and
//!   costs at most one fetch;
//! - a request whose node's batching worker stopped with its runtime →
//!   [`Action::Refresh`] with [`RetryCause::WorkerStopped`]: the retry
//!   starts a new worker on the caller's runtime;
//! - `NOSCRIPT` → [`Action::NoScript`]: resend the script's source;
//! - anything else → [`Action::Fail`]: the caller gets the error.

use std::fmt;

use redis::{RedisError, Value};

/// Why an attempt is worth repeating; also what a deadline error names as
/// the last thing that went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryCause {
    /// The slot map sent us elsewhere (`MOVED`).
    Moved,
    /// The slot is being migrated (`ASK`).
    Ask,
    /// `TRYAGAIN`: a multi-key request during a migration.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve the slot right now.
    ClusterDown,
    /// `LOADING`: the node is loading its data set.
    Loading,
    /// `MASTERDOWN`: a replica lost its primary.
    MasterDown,
    /// `READONLY`: a write reached a replica (typically a demoted primary).
    ReadOnly,
    /// The node refused the connection.
    ConnectionRefused,
    /// The connection broke (reset, closed, or a failed reconnect).
    ConnectionLost,
    /// No reply within the response timeout.
    TimedOut,
    /// No node is known to serve the slot.
    SlotUnassigned,
    /// The node is in reconnect backoff after failed connection attempts.
    NodeBackoff,
    /// `BUSY`: the node is running a script or function past
    /// `busy-reply-threshold` and refuses other commands until it ends.
    Busy,
    /// `NOREPLICAS`: the primary has fewer good replicas than its
    /// `min-replicas-to-write` and refuses writes.
    NoReplicas,
    /// The node's batching worker stopped (the runtime it ran on shut
    /// down) before it answered; the retry starts a new one on the
    /// caller's runtime.
    WorkerStopped,
}

impl RetryCause {
    /// A short label, used as a metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryCause::Moved => "moved",
            RetryCause::Ask => "ask",
            RetryCause::TryAgain => "tryagain",
            RetryCause::ClusterDown => "clusterdown",
            RetryCause::Loading => "loading",
            RetryCause::MasterDown => "masterdown",
            RetryCause::ReadOnly => "readonly",
            RetryCause::ConnectionRefused => "connection_refused",
            RetryCause::ConnectionLost => "connection_lost",
            RetryCause::TimedOut => "timeout",
            RetryCause::SlotUnassigned => "slot_unassigned",
            RetryCause::NodeBackoff => "node_backoff",
            RetryCause::Busy => "busy",
            RetryCause::NoReplicas => "noreplicas",
            RetryCause::WorkerStopped => "worker_stopped",
        }
    }
}

impl fmt::Display for RetryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt cannot succeed by repeating it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailCause {
    /// The server answered with an error that retrying does not cure
    /// (`WRONGTYPE`, `ERR …`, `CROSSSLOT`, `NOPERM`, …).
    Server {
        /// The error code, e.g. `WRONGTYPE`.
        code: String,
        /// The rest of the error line.
        message: String,
    },
    /// Authentication was refused (`WRONGPASS`, `NOAUTH`).
    Auth(String),
    /// The reply was not Redis protocol, or not the shape we expect.
    Protocol(String),
    /// Any other client-side failure.
    Other(String),
}

impl fmt::Display for FailCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailCause::Server { code, message } if message.is_empty() => write!(f, "{code}"),
            FailCause::Server { code, message } => write!(f, "{code} {message}"),
            FailCause::Auth(m) => write!(f, "authentication failed: {m}"),
            FailCause::Protocol(m) => write!(f, "unexpected reply: {m}"),
            FailCause::Other(m) => f.write_str(m),
        }
    }
}

/// The router's next step after one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Every reply is a result: hand them to the caller.
    Done,
    /// `MOVED`: patch `slot` to `addr`, ask for a full refresh, resend.
    Moved {
        /// The slot that moved.
        slot: u16,
        /// Its new owner, `host:port`.
        addr: String,
    },
    /// `ASK`: resend once to `addr` behind `ASKING`; no map change.
    Ask {
        /// The slot being migrated.
        slot: u16,
        /// The importing node, `host:port`.
        addr: String,
    },
    /// Back off and resend to the same slot owner.
    TryAgain,
    /// Back off, refresh the topology, resend.
    Refresh(RetryCause),
    /// The script is not in the server's cache: resend its source.
    NoScript,
    /// Give up: the error goes to the caller.
    Fail(FailCause),
}

/// Decides what to do with the outcome of one attempt.
pub fn classify(outcome: &Result<Vec<Value>, RedisError>) -> Action {
    match outcome {
        Ok(replies) => replies
            .iter()
            .find_map(|reply| match reply {
                Value::ServerError(e) => {
                    Some(classify_error(e.code(), e.details().unwrap_or_default()))
                }
                _ => None,
            })
            .unwrap_or(Action::Done),
        Err(err) => classify_transport(err),
    }
}

/// Classifies one error reply by its code (first word) and the rest.
pub fn classify_error(code: &str, detail: &str) -> Action {
    match code {
        "MOVED" | "ASK" => match parse_redirect(detail) {
            Some((slot, addr)) if code == "MOVED" => Action::Moved { slot, addr },
            Some((slot, addr)) => Action::Ask { slot, addr },
            None => Action::Fail(FailCause::Protocol(format!(
                "malformed {code} redirect: {detail:?}"
            ))),
        },
        "TRYAGAIN" => Action::TryAgain,
        "CLUSTERDOWN" => Action::Refresh(RetryCause::ClusterDown),
        "LOADING" => Action::Refresh(RetryCause::Loading),
        "MASTERDOWN" => Action::Refresh(RetryCause::MasterDown),
        "READONLY" => Action::Refresh(RetryCause::ReadOnly),
        "BUSY" => Action::Refresh(RetryCause::Busy),
        "NOREPLICAS" => Action::Refresh(RetryCause::NoReplicas),
        "NOSCRIPT" => Action::NoScript,
        "WRONGPASS" | "NOAUTH" => Action::Fail(FailCause::Auth(format!("{code} {detail}"))),
        _ => Action::Fail(FailCause::Server {
            code: code.to_owned(),
            message: detail.to_owned(),
        }),
    }
}

/// Classifies a raw RESP error line such as `-MOVED 3999 127.0.0.1:6381`
/// (the leading `-` and a trailing CRLF are optional).
pub fn classify_line(line: &str) -> Action {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.strip_prefix('-').unwrap_or(line);
    let (code, detail) = line.split_once(' ').unwrap_or((line, ""));
    classify_error(code, detail)
}

/// `"3999 127.0.0.1:6381"` → `(3999, "127.0.0.1:6381")`. An empty host
/// (`":6381"`, sent by nodes that do not know their own address) is kept
/// as is: the router resolves it against the node that answered.
fn parse_redirect(detail: &str) -> Option<(u16, String)> {
    let mut words = detail.split_ascii_whitespace();
    let slot: u16 = words.next()?.parse().ok()?;
    let addr = words.next()?;
    if slot >= crate::slot::SLOT_COUNT || words.next().is_some() {
        return None;
    }
    let (_, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some((slot, addr.to_owned()))
}

/// Transport failures and client-side errors that carry no server reply.
fn classify_transport(err: &RedisError) -> Action {
    if let Some(code) = err.code() {
        // A server error surfaced as `Err` (e.g. from the handshake).
        return classify_error(code, err.detail().unwrap_or_default());
    }
    if err.is_timeout() {
        return Action::Refresh(RetryCause::TimedOut);
    }
    if err.is_connection_refusal() {
        return Action::Refresh(RetryCause::ConnectionRefused);
    }
    if err.is_connection_dropped() || err.is_io_error() {
        return Action::Refresh(RetryCause::ConnectionLost);
    }
    if crate::batcher::is_worker_stopped(err) {
        return Action::Refresh(RetryCause::WorkerStopped);
    }
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed => Action::Fail(FailCause::Auth(err.to_string())),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            Action::Fail(FailCause::Protocol(err.to_string()))
        }
        _ => Action::Fail(FailCause::Other(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// An `io::Error` of the kind a transport failure produces.
    fn io_error(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::new(kind, "test"))
    }

    /// Every documented error line maps to the action the router needs.
    #[test]
    fn error_lines_table() {
        let moved = |slot, addr: &str| Action::Moved {
            slot,
            addr: addr.into(),
        };
        let ask = |slot, addr: &str| Action::Ask {
            slot,
            addr: addr.into(),
        };
        let table: &[(&str, Action)] = &[
            ("-MOVED 3999 127.0.0.1:6381", moved(3999, "127.0.0.1:6381")),
            ("-MOVED 0 10.0.0.1:7000\r\n", moved(0, "10.0.0.1:7000")),
            (
                "MOVED 16383 redis-0.svc:6379",
                moved(16383, "redis-0.svc:6379"),
            ),
            ("-MOVED 12182 :7001", moved(12182, ":7001")),
            ("-MOVED 866 ::1:7002", moved(866, "::1:7002")),
            ("-ASK 3999 127.0.0.1:6381", ask(3999, "127.0.0.1:6381")),
            (
                "-TRYAGAIN Multiple keys request during rehashing of slot",
                Action::TryAgain,
            ),
            (
                "-CLUSTERDOWN The cluster is down",
                Action::Refresh(RetryCause::ClusterDown),
            ),
            (
                "-CLUSTERDOWN Hash slot not served",
                Action::Refresh(RetryCause::ClusterDown),
            ),
            (
                "-LOADING Redis is loading the dataset in memory",
                Action::Refresh(RetryCause::Loading),
            ),
            (
                "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
                Action::Refresh(RetryCause::MasterDown),
            ),
            (
                "-READONLY You can't write against a read only replica.",
                Action::Refresh(RetryCause::ReadOnly),
            ),
            (
                "-NOSCRIPT No matching script. Please use EVAL.",
                Action::NoScript,
            ),
            (
                "-WRONGPASS invalid username-password pair or user is disabled.",
                Action::Fail(FailCause::Auth(
                    "WRONGPASS invalid username-password pair or user is disabled.".into(),
                )),
            ),
            (
                "-NOAUTH Authentication required.",
                Action::Fail(FailCause::Auth("NOAUTH Authentication required.".into())),
            ),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value",
                Action::Fail(FailCause::Server {
                    code: "WRONGTYPE".into(),
                    message: "Operation against a key holding the wrong kind of value".into(),
                }),
            ),
            (
                "-CROSSSLOT Keys in request don't hash to the same slot",
                Action::Fail(FailCause::Server {
                    code: "CROSSSLOT".into(),
                    message: "Keys in request don't hash to the same slot".into(),
                }),
            ),
            (
                "-ERR unknown command 'FOO'",
                Action::Fail(FailCause::Server {
                    code: "ERR".into(),
                    message: "unknown command 'FOO'".into(),
                }),
            ),
            ("-BUSY", Action::Refresh(RetryCause::Busy)),
            (
                "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
                Action::Refresh(RetryCause::Busy),
            ),
            (
                "-NOREPLICAS Not enough good replicas to write.",
                Action::Refresh(RetryCause::NoReplicas),
            ),
            (
                "-BUSYKEY Target key name already exists.",
                Action::Fail(FailCause::Server {
                    code: "BUSYKEY".into(),
                    message: "Target key name already exists.".into(),
                }),
            ),
        ];
        for (line, want) in table {
            assert_eq!(&classify_line(line), want, "line {line:?}");
        }
    }

    /// Malformed redirects are protocol errors, never a retry to nowhere.
    #[test]
    fn malformed_redirects_fail() {
        for line in [
            "-MOVED",
            "-MOVED 3999",
            "-MOVED abc 127.0.0.1:6381",
            "-MOVED 16384 127.0.0.1:6381",
            "-MOVED -1 127.0.0.1:6381",
            "-MOVED 1 127.0.0.1",
            "-MOVED 1 127.0.0.1:notaport",
            "-MOVED 1 127.0.0.1:6381 extra",
            "-ASK 70000 127.0.0.1:6381",
        ] {
            assert!(
                matches!(classify_line(line), Action::Fail(FailCause::Protocol(_))),
                "line {line:?} gave {:?}",
                classify_line(line)
            );
        }
    }

    /// The first error reply of a pipeline decides; plain replies are Done.
    #[test]
    fn pipelines_use_the_first_error() {
        let moved = redis::Value::ServerError(server_error("MOVED 7 127.0.0.1:7001"));
        let ask = redis::Value::ServerError(server_error("ASK 7 127.0.0.1:7002"));
        let ok = redis::Value::Okay;
        assert_eq!(
            classify(&Ok(vec![ok.clone(), redis::Value::Nil])),
            Action::Done
        );
        assert_eq!(classify(&Ok(vec![])), Action::Done);
        assert_eq!(
            classify(&Ok(vec![ok.clone(), ask.clone(), moved.clone()])),
            Action::Ask {
                slot: 7,
                addr: "127.0.0.1:7002".into()
            }
        );
        assert_eq!(
            classify(&Ok(vec![moved, ask])),
            Action::Moved {
                slot: 7,
                addr: "127.0.0.1:7001".into()
            }
        );
    }

    /// Transport failures ask for a refresh and name their cause.
    #[test]
    fn transport_failures_table() {
        let table = [
            (
                io::ErrorKind::ConnectionRefused,
                RetryCause::ConnectionRefused,
            ),
            (io::ErrorKind::ConnectionReset, RetryCause::ConnectionLost),
            (io::ErrorKind::BrokenPipe, RetryCause::ConnectionLost),
            (io::ErrorKind::UnexpectedEof, RetryCause::ConnectionLost),
            (io::ErrorKind::TimedOut, RetryCause::TimedOut),
        ];
        for (kind, cause) in table {
            assert_eq!(
                classify(&Err(io_error(kind))),
                Action::Refresh(cause.clone()),
                "{kind:?}"
            );
        }
    }

    /// A request whose batching worker stopped with its runtime is retried
    /// (the retry starts a new worker); other client-side errors fail.
    #[test]
    fn stopped_batcher_is_retried() {
        assert_eq!(
            classify(&Err(crate::batcher::worker_gone())),
            Action::Refresh(RetryCause::WorkerStopped)
        );
        let other = RedisError::from((redis::ErrorKind::Client, "something else"));
        assert!(matches!(
            classify(&Err(other)),
            Action::Fail(FailCause::Other(_))
        ));
    }

    /// A server error that arrives as `Err` is classified like a reply.
    #[test]
    fn server_errors_as_err() {
        let err: RedisError = server_error("MOVED 5 127.0.0.1:7003").into();
        assert_eq!(
            classify(&Err(err)),
            Action::Moved {
                slot: 5,
                addr: "127.0.0.1:7003".into()
            }
        );
    }

    /// Parses a server error line through the redis crate's own parser, so
    /// the tests see exactly what a connection would hand us.
    fn server_error(line: &str) -> redis::ServerError {
        let frame = format!("-{line}\r\n");
        match redis::parse_redis_value(frame.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e,
            other => panic!("not a server error: {other:?}"),
        }
    }
}

#[cfg(test)]
#[path = "redirect_props.rs"]
mod props;
