//! Auto-pipelining: requests for one node that are submitted close together
//! leave in one write, as one pipeline, and come back in one read.
//!
//! A lock cycle is two round trips, so a busy service sends many small
//! requests to each node at once. Sent one by one, each costs a `write` on
//! the client, a `read` and a `write` on the server, and a wake-up on both
//! sides; on loopback and fast LANs those system calls cost more than the
//! commands. The node's worker collects whatever has been submitted by the
//! time it runs (it yields once to the runtime first, so tasks made ready by
//! the same event all get their turn) and sends it as one pipeline. A
//! request that finds nothing else unanswered on its node skips the worker
//! and goes out at once, so an idle client pays no extra hop; a busy one
//! pays one write per batch.
//!
//! Invariants:
//! - A request's commands stay contiguous and in order within a batch, so
//!   `ASKING` stays right before its command; requests keep submission order.
//! - Every request gets exactly its own replies, error replies in place; a
//!   batch that fails in transport (connection lost, response timeout)
//!   gives that error to every request in it.
//! - A submitter that gives up (deadline, dropped future) drops only its own
//!   receiver; requests whose submitters are gone before the batch is built
//!   are not sent.
//! - A batch holds the connection its requests were submitted with; one
//!   batch never mixes connections.
//! - The worker ends when its handle (the node) is dropped, after its
//!   in-flight batches finish, or when the runtime it runs on shuts down;
//!   the node then replaces the handle on the next request's runtime. A
//!   request still queued or in flight in a worker that stopped with its
//!   runtime (submitted from another runtime) fails with an error the
//!   router retries ([`crate::redirect::RetryCause::WorkerStopped`]), and
//!   its retry goes through the new worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use crate::node::Conn;

/// Most commands in one batch; more wait for the next one.
const MAX_BATCH_COMMANDS: usize = 1024;

/// Handle to one node's batching worker.
pub(crate) struct Batcher {
    submissions: mpsc::UnboundedSender<Submission>,
    /// Requests sent through this batcher and not yet answered (or given
    /// up), direct ones included.
    unanswered: AtomicUsize,
    writes: Arc<AtomicU64>,
}

/// Where one request's replies go.
type ReplyTo = oneshot::Sender<RedisResult<Vec<Value>>>;

struct Submission {
    conn: Conn,
    cmds: Vec<Cmd>,
    reply: ReplyTo,
}

impl Batcher {
    /// Starts the worker on the current tokio runtime; it adds one to
    /// `writes` per batch sent.
    pub(crate) fn spawn(writes: Arc<AtomicU64>) -> Batcher {
        let (submissions, receiver) = mpsc::unbounded_channel();
        tokio::spawn(worker(receiver, writes.clone()));
        Batcher {
            submissions,
            unanswered: AtomicUsize::new(0),
            writes,
        }
    }

    /// True once the worker has ended: the runtime it ran on shut down.
    /// The node then starts a new one (see [`crate::node::Node::batcher`]).
    pub(crate) fn is_stopped(&self) -> bool {
        self.submissions.is_closed()
    }

    /// Sends `cmds` over `conn` and waits for their replies (one per
    /// command, error replies in place): straight away when nothing else is
    /// waiting on this node (an idle client pays no extra hop), otherwise in
    /// the next batch.
    pub(crate) async fn send(&self, conn: Conn, cmds: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        let _unanswered = Unanswered::enter(&self.unanswered);
        if _unanswered.alone {
            self.writes.fetch_add(1, Relaxed);
            let total = cmds.len();
            let mut pipeline = Pipeline::with_capacity(total);
            for cmd in cmds {
                pipeline.add_command(cmd);
            }
            let mut sender = (*conn).clone();
            return sender.send_packed_commands(&pipeline, 0, total).await;
        }
        let (reply, replied) = oneshot::channel();
        let submission = Submission { conn, cmds, reply };
        if self.submissions.send(submission).is_err() {
            return Err(worker_gone());
        }
        replied.await.unwrap_or_else(|_| Err(worker_gone()))
    }
}

/// Counts one request as unanswered until dropped (answered or given up).
struct Unanswered<'a> {
    count: &'a AtomicUsize,
    /// No other request was unanswered when this one came.
    alone: bool,
}

impl<'a> Unanswered<'a> {
    fn enter(count: &'a AtomicUsize) -> Unanswered<'a> {
        let alone = count.fetch_add(1, Relaxed) == 0;
        Unanswered { count, alone }
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }
}

/// What a request queued in a worker that stopped gets.
const WORKER_STOPPED: &str = "the node's batching worker has stopped";

/// Not an I/O error: the connection itself is fine, so it must not be
/// discarded for this. Retryable (see [`is_worker_stopped`]): the next
/// attempt asks the node for its batcher again, which starts a new worker
/// on that attempt's runtime.
pub(crate) fn worker_gone() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, WORKER_STOPPED))
}

/// True for the error of a request whose batching worker stopped (its
/// runtime shut down) before answering it.
pub(crate) fn is_worker_stopped(err: &RedisError) -> bool {
    matches!(err.kind(), redis::ErrorKind::Client) && err.to_string().contains(WORKER_STOPPED)
}

async fn worker(mut receiver: mpsc::UnboundedReceiver<Submission>, writes: Arc<AtomicU64>) {
    let mut in_flight = FuturesUnordered::new();
    let mut carried: Option<Submission> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => {
                // In-flight batches first: a batch is written when its
                // future is first polled, so it must not wait behind new
                // submissions.
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                    received = receiver.recv() => match received {
                        Some(first) => {
                            // Let the tasks woken with this submitter add theirs.
                            tokio::task::yield_now().await;
                            first
                        }
                        None => break,
                    },
                }
            }
        };
        let mut batch = vec![first];
        let mut commands = batch[0].cmds.len();
        while commands < MAX_BATCH_COMMANDS {
            match receiver.try_recv() {
                Ok(next) if Arc::ptr_eq(&next.conn, &batch[0].conn) => {
                    commands += next.cmds.len();
                    batch.push(next);
                }
                Ok(other_conn) => {
                    carried = Some(other_conn);
                    break;
                }
                Err(_) => break,
            }
        }
        in_flight.push(send_batch(batch, &writes));
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one batch and hands each submitter its replies.
async fn send_batch(batch: Vec<Submission>, writes: &AtomicU64) {
    let batch: Vec<Submission> = batch.into_iter().filter(|s| !s.reply.is_closed()).collect();
    let Some(conn) = batch.first().map(|s| s.conn.clone()) else {
        return;
    };
    let total: usize = batch.iter().map(|s| s.cmds.len()).sum();
    let mut pipeline = Pipeline::with_capacity(total);
    let mut waiters = Vec::with_capacity(batch.len());
    for submission in batch {
        waiters.push((submission.cmds.len(), submission.reply));
        for cmd in submission.cmds {
            pipeline.add_command(cmd);
        }
    }
    writes.fetch_add(1, Relaxed);
    let mut sender = (*conn).clone();
    let result = sender.send_packed_commands(&pipeline, 0, total).await;
    hand_out(result, total, waiters);
}

/// Splits a batch's replies among its submitters, in order.
fn hand_out(result: RedisResult<Vec<Value>>, total: usize, waiters: Vec<(usize, ReplyTo)>) {
    let result = result.and_then(|replies| {
        if replies.len() == total {
            Ok(replies)
        } else {
            Err(RedisError::from((
                redis::ErrorKind::Client,
                "pipeline answered with the wrong number of replies",
                format!("{} replies for {total} commands", replies.len()),
            )))
        }
    });
    match result {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for (count, reply) in waiters {
                let _ = reply.send(Ok(replies.by_ref().take(count).collect()));
            }
        }
        Err(e) => {
            for (_, reply) in waiters {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Replies = oneshot::Receiver<RedisResult<Vec<Value>>>;

    fn waiters(counts: &[usize]) -> (Vec<(usize, ReplyTo)>, Vec<Replies>) {
        counts
            .iter()
            .map(|&n| {
                let (tx, rx) = oneshot::channel();
                ((n, tx), rx)
            })
            .unzip()
    }

    /// Each submitter gets exactly its own replies, in order, error replies in place.
    #[test]
    fn replies_are_split_in_order() {
        let (w, mut rx) = waiters(&[1, 2, 1]);
        let err = redis::parse_redis_value(b"-MOVED 1 127.0.0.1:1\r\n").unwrap();
        assert!(matches!(err, Value::ServerError(_)));
        let replies = vec![Value::Int(1), Value::Okay, err.clone(), Value::Nil];
        hand_out(Ok(replies), 4, w);
        assert_eq!(rx[0].try_recv().unwrap().unwrap(), vec![Value::Int(1)]);
        assert_eq!(rx[1].try_recv().unwrap().unwrap(), vec![Value::Okay, err]);
        assert_eq!(rx[2].try_recv().unwrap().unwrap(), vec![Value::Nil]);
    }

    /// A transport error, or a reply count that does not match, reaches every submitter.
    #[test]
    fn batch_errors_reach_everyone() {
        let (w, mut rx) = waiters(&[1, 1]);
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        hand_out(Err(io), 2, w);
        for r in &mut rx {
            assert!(r.try_recv().unwrap().unwrap_err().is_connection_dropped());
        }
        let (w, mut rx) = waiters(&[1, 1]);
        hand_out(Ok(vec![Value::Okay]), 2, w);
        for r in &mut rx {
            assert!(r.try_recv().unwrap().is_err());
        }
    }
}
