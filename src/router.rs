//! The router: slot → node → send, then act on [`classify`]'s decision,
//! retrying within the caller's deadline.
//!
//! Invariants:
//! - The slot map is read with one `ArcSwap` load per attempt and never
//!   held across an `.await`; only the refresher and MOVED patches store.
//! - The snapshot may be stale: MOVED repairs it (a patch for that slot plus
//!   a hint to the refresher), ASK is obeyed for one attempt only.
//! - Every retry is bounded by the deadline; when it passes the caller gets
//!   [`Error::DeadlineExceeded`] naming the last cause. Requests may be sent
//!   more than once, so they must be idempotent (see [`Request`]).
//! - A blocking request (`WAIT`) goes on a connection of its own (see
//!   [`crate::node`]), through the same redirect and retry loop: it never
//!   delays the requests sharing the node's multiplexed connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use redis::Value;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::{ConnectError, NodePool};
use crate::redirect::{Action, FailCause, RetryCause, classify};
use crate::refresh::RefreshHandle;
use crate::request::Request;
use crate::stats::Counters;
use crate::topology::Topology;

/// Consecutive redirects after which the router also backs off (a slot
/// bouncing between nodes that disagree, e.g. mid-failover).
const REDIRECTS_BEFORE_BACKOFF: u32 = 8;

/// Routing state shared by the router, its clones and the refresher worker.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) topology: ArcSwap<Topology>,
    pub(crate) nodes: NodePool,
    pub(crate) counters: Counters,
}

impl Shared {
    /// Installs a fetched snapshot unless it equals the current one; returns
    /// the version in use afterwards. Forgets nodes that are neither in the
    /// new map nor seeds.
    pub(crate) fn install(&self, fetched: Topology) -> u64 {
        let mut version = 0;
        self.topology.rcu(|current| {
            let same = fetched.clone().with_version(current.version());
            if same == **current {
                version = current.version();
                current.clone()
            } else {
                version = current.version() + 1;
                Arc::new(same.with_version(version))
            }
        });
        let topology = self.topology.load();
        let keep: HashSet<&str> = topology
            .nodes()
            .map(|n| n.addr().as_ref())
            .chain(self.config.seeds.iter().map(String::as_str))
            .collect();
        self.nodes.retain(|addr| keep.contains(addr));
        version
    }

    /// Points `slot` at `addr` after a MOVED; false if it already was.
    fn patch_moved(&self, slot: u16, addr: &str) -> bool {
        let mut patched = false;
        self.topology
            .rcu(|current| match current.with_slot_moved(slot, addr) {
                Some(next) => {
                    patched = true;
                    Arc::new(next)
                }
                None => {
                    patched = false;
                    current.clone()
                }
            });
        if patched {
            crate::metrics::topology_version(self.topology.load().version());
        }
        patched
    }
}

/// How far a request may go to succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Follow redirects and retry unavailability until the deadline.
    UntilDeadline,
    /// Follow redirects (MOVED, ASK, NOSCRIPT), but give up at the first
    /// unavailability (refused, backoff, timeout, CLUSTERDOWN, TRYAGAIN):
    /// for callers that have other places to go (Redlock's instances).
    RedirectsOnly,
}

/// Sends requests to the node that serves their slot.
pub(crate) struct Router {
    pub(crate) shared: Arc<Shared>,
    /// Replaced only when its worker has ended (see [`Router::refresher`]).
    refresher: ArcSwap<RefreshHandle>,
    /// Held by the one caller replacing a stopped refresher.
    respawn: Mutex<()>,
}

/// How one attempt ended.
enum Outcome {
    Replies(std::result::Result<Vec<Value>, redis::RedisError>),
    NoConnection(ConnectError),
}

impl Router {
    pub(crate) fn new(shared: Arc<Shared>, refresher: RefreshHandle) -> Router {
        Router {
            shared,
            refresher: ArcSwap::from_pointee(refresher),
            respawn: Mutex::new(()),
        }
    }

    /// The refresher's handle. Its worker runs on the runtime that started
    /// it and ends when that runtime shuts down; the first call afterwards
    /// (from within another runtime) starts a new worker there, so a client
    /// outlives the runtime it was built on. Outside any runtime the
    /// stopped handle is returned and its calls fail with
    /// [`Error::Stopped`].
    pub(crate) fn refresher(&self) -> Arc<RefreshHandle> {
        let current = self.refresher.load_full();
        if !current.is_stopped() {
            return current;
        }
        let _respawn = self.respawn.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.refresher.load_full();
        if !current.is_stopped() || tokio::runtime::Handle::try_current().is_err() {
            return current;
        }
        tracing::debug!("the topology refresher stopped with its runtime; starting it again");
        let fresh = Arc::new(crate::refresh::spawn(self.shared.clone()));
        self.refresher.store(fresh.clone());
        fresh
    }

    /// Runs `request` against the owner of `slot` until it succeeds, fails
    /// for good, or `deadline` passes.
    pub(crate) async fn execute(
        &self,
        slot: u16,
        request: &Request,
        deadline: Instant,
        retry: Retry,
    ) -> Result<Vec<Value>> {
        self.execute_timed(slot, request, deadline, retry)
            .await
            .map(|(replies, _)| replies)
    }

    /// [`execute`](Self::execute), also returning when the attempt that
    /// got the replies was sent (later than the first attempt when the
    /// request was retried).
    pub(crate) async fn execute_timed(
        &self,
        slot: u16,
        request: &Request,
        deadline: Instant,
        retry: Retry,
    ) -> Result<(Vec<Value>, Instant)> {
        if request.is_empty() {
            return Ok((Vec::new(), Instant::now()));
        }
        let counters = &self.shared.counters;
        let started = Instant::now();
        let mut attempts: u32 = 0;
        let mut backoffs: u32 = 0;
        let mut redirects: u32 = 0;
        let mut ask_target: Option<Arc<str>> = None;
        let mut eval = false;
        let mut last = RetryCause::TimedOut;
        loop {
            if attempts > 0 && Instant::now() >= deadline {
                Counters::bump(&counters.deadlines_exceeded);
                crate::metrics::final_error("deadline");
                return Err(Error::DeadlineExceeded {
                    attempts,
                    elapsed: started.elapsed(),
                    last,
                });
            }
            attempts += 1;
            let asking = ask_target.is_some();
            let addr = match ask_target.take() {
                Some(addr) => addr,
                None => match self.shared.topology.load().primary_of_slot(slot) {
                    Some(node) => node.addr().clone(),
                    None => {
                        last = RetryCause::SlotUnassigned;
                        self.refresher().request(counters)?;
                        if retry == Retry::RedirectsOnly {
                            return Err(gave_up(attempts, started, last));
                        }
                        self.back_off(&mut backoffs, deadline).await;
                        continue;
                    }
                },
            };

            Counters::bump(&counters.attempts);
            let sent = Instant::now();
            let action = match self.attempt(&addr, request, asking, eval, deadline).await {
                Outcome::Replies(result) => match classify(&result) {
                    Action::Done => {
                        let replies = result.unwrap_or_default();
                        let replies = if asking {
                            strip_asking(replies)
                        } else {
                            replies
                        };
                        return Ok((replies, sent));
                    }
                    other => other,
                },
                Outcome::NoConnection(e) => e.action(),
            };
            match action {
                Action::Done => unreachable!("handled above"),
                Action::Moved {
                    slot: moved,
                    addr: to,
                } => {
                    Counters::bump(&counters.moved);
                    crate::metrics::redirect("moved");
                    last = RetryCause::Moved;
                    let to = with_host_of(&to, &addr);
                    if self.shared.patch_moved(moved, &to) {
                        self.refresher().request(counters)?;
                    }
                    redirects += 1;
                    if redirects > REDIRECTS_BEFORE_BACKOFF {
                        self.back_off(&mut backoffs, deadline).await;
                    }
                }
                Action::Ask { addr: to, .. } => {
                    Counters::bump(&counters.ask);
                    crate::metrics::redirect("ask");
                    last = RetryCause::Ask;
                    ask_target = Some(with_host_of(&to, &addr).into());
                    redirects += 1;
                    if redirects > REDIRECTS_BEFORE_BACKOFF {
                        self.back_off(&mut backoffs, deadline).await;
                    }
                }
                Action::TryAgain => {
                    Counters::bump(&counters.try_again);
                    crate::metrics::retryable_error(&RetryCause::TryAgain);
                    last = RetryCause::TryAgain;
                    if retry == Retry::RedirectsOnly {
                        return Err(gave_up(attempts, started, last));
                    }
                    self.back_off(&mut backoffs, deadline).await;
                }
                Action::Refresh(cause) => {
                    Counters::bump(&counters.retryable_errors);
                    crate::metrics::retryable_error(&cause);
                    self.refresher().request(counters)?;
                    last = cause;
                    if retry == Retry::RedirectsOnly {
                        return Err(gave_up(attempts, started, last));
                    }
                    self.back_off(&mut backoffs, deadline).await;
                }
                Action::NoScript if !eval => {
                    Counters::bump(&counters.noscript);
                    eval = true;
                }
                Action::NoScript => {
                    crate::metrics::final_error("protocol");
                    return Err(Error::UnexpectedReply(format!(
                        "{addr} answered NOSCRIPT to EVAL"
                    )));
                }
                Action::Fail(cause) => {
                    crate::metrics::final_error(match &cause {
                        FailCause::Server { .. } => "server",
                        FailCause::Auth(_) => "auth",
                        FailCause::Protocol(_) => "protocol",
                        FailCause::Other(_) => "other",
                    });
                    return Err(Error::from_fail(cause, &addr));
                }
            }
        }
    }

    /// One send to `addr`, cut at the deadline.
    async fn attempt(
        &self,
        addr: &str,
        request: &Request,
        asking: bool,
        eval: bool,
        deadline: Instant,
    ) -> Outcome {
        let pipeline = request.attempt(asking, eval);
        if request.is_blocking() {
            return self.send_blocking(addr, &pipeline, deadline).await;
        }
        self.send_pipeline(addr, &pipeline, deadline).await
    }

    /// Sends a blocking request's `pipeline` to `addr` once, on one of the
    /// node's connections for blocking requests (see
    /// [`crate::node::Node::blocking_connection`]): it holds no other
    /// request up. The connection is kept for reuse only after a reply.
    async fn send_blocking(
        &self,
        addr: &str,
        pipeline: &redis::Pipeline,
        deadline: Instant,
    ) -> Outcome {
        let node = self.shared.nodes.node(addr);
        let mut conn = match node.blocking_connection(deadline).await {
            Ok(conn) => conn,
            Err(e) => return Outcome::NoConnection(e),
        };
        let started = Instant::now();
        Counters::bump(&self.shared.counters.writes);
        let sent = conn.get().send_packed_commands(pipeline, 0, pipeline.len());
        let result = reply_by(deadline, sent).await;
        crate::metrics::command_duration(node.addr(), started.elapsed());
        if result.is_ok() {
            conn.give_back();
        }
        Outcome::Replies(result)
    }

    /// Sends `pipeline` to the node at `addr` once, following nothing: the
    /// replies come back as they are (error replies in place), for callers
    /// that handle each command's fate themselves (batches over many slots).
    pub(crate) async fn send_to_node(
        &self,
        addr: &str,
        pipeline: &redis::Pipeline,
        deadline: Instant,
    ) -> std::result::Result<Vec<Value>, Action> {
        Counters::bump(&self.shared.counters.attempts);
        match self.send_pipeline(addr, pipeline, deadline).await {
            Outcome::Replies(Ok(replies)) => Ok(replies),
            Outcome::Replies(Err(e)) => Err(classify(&Err(e))),
            Outcome::NoConnection(e) => Err(e.action()),
        }
    }

    async fn send_pipeline(
        &self,
        addr: &str,
        pipeline: &redis::Pipeline,
        deadline: Instant,
    ) -> Outcome {
        let node = self.shared.nodes.node(addr);
        let conn = match node.connection(deadline).await {
            Ok(conn) => conn,
            Err(e) => return Outcome::NoConnection(e),
        };
        let started = Instant::now();
        let sent = async {
            if self.shared.config.auto_pipeline {
                let cmds = pipeline.cmd_iter().cloned().collect();
                node.batcher().send(conn.clone(), cmds).await
            } else {
                Counters::bump(&self.shared.counters.writes);
                let mut sender = (*conn).clone();
                sender
                    .send_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
        };
        let result = reply_by(deadline, sent).await;
        crate::metrics::command_duration(node.addr(), started.elapsed());
        if let Err(e) = &result
            && (e.is_unrecoverable_error() || e.is_connection_dropped())
        {
            node.discard(&conn);
        }
        Outcome::Replies(result)
    }

    /// Sleeps the next backoff delay, never past the deadline.
    async fn back_off(&self, backoffs: &mut u32, deadline: Instant) {
        let delay = self.shared.config.retry_backoff.delay(*backoffs);
        *backoffs = backoffs.saturating_add(1);
        tokio::time::sleep_until(deadline.min(Instant::now() + delay)).await;
    }
}

/// The error of a request that stopped at an unavailability.
fn gave_up(attempts: u32, started: Instant, last: RetryCause) -> Error {
    Error::DeadlineExceeded {
        attempts,
        elapsed: started.elapsed(),
        last,
    }
}

/// Drops the replies to `ASKING` (every even position).
fn strip_asking(replies: Vec<Value>) -> Vec<Value> {
    replies.into_iter().skip(1).step_by(2).collect()
}

/// A redirect to `":port"` (a node that does not know its own address)
/// means the host of the node that sent it.
fn with_host_of(to: &str, from: &str) -> String {
    match (to.strip_prefix(':'), from.rsplit_once(':')) {
        (Some(port), Some((host, _))) => format!("{host}:{port}"),
        _ => to.to_owned(),
    }
}

/// The replies of `sent`, or a timed-out error once `deadline` passes
/// (classified as a timeout, like a response timeout).
async fn reply_by(
    deadline: Instant,
    sent: impl std::future::Future<Output = redis::RedisResult<Vec<Value>>>,
) -> redis::RedisResult<Vec<Value>> {
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "deadline passed while waiting for the reply",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASKING replies are dropped, the command replies kept in order.
    #[test]
    fn strip_asking_keeps_odd_positions() {
        let v = |i| Value::Int(i);
        assert_eq!(
            strip_asking(vec![Value::Okay, v(1), Value::Okay, v(2)]),
            vec![v(1), v(2)]
        );
        assert_eq!(strip_asking(vec![]), vec![]);
    }

    /// Empty-host redirects take the host of the node that sent them.
    #[test]
    fn empty_host_redirects() {
        assert_eq!(with_host_of(":7001", "10.0.0.5:7000"), "10.0.0.5:7001");
        assert_eq!(
            with_host_of("10.0.0.6:7001", "10.0.0.5:7000"),
            "10.0.0.6:7001"
        );
    }
}
