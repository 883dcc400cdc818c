//! What the router sends: one command, a pipeline, or a script, all for one
//! slot.
//!
//! The router may send a request more than once (after a redirect, a
//! timeout, a reconnect), so requests must be idempotent or carry their own
//! way of recognising an earlier success (as the lock commands do with
//! their tokens). A request marked [`Request::blocking`] (one that ends in
//! `WAIT`) runs on a connection of its own, so it delays no other request.

use std::borrow::Cow;
use std::sync::Arc;

use redis::{Arg, Cmd, Pipeline, ToRedisArgs};

/// A Lua script sent by SHA1 (`EVALSHA`), with its source kept for the
/// `NOSCRIPT` fallback (`EVAL`, which also loads it into the server's cache).
#[derive(Clone, Debug)]
pub struct Script {
    source: Arc<str>,
    sha1: Arc<str>,
}

impl Script {
    /// A script with this source.
    pub fn new(source: &str) -> Script {
        let sha1 = redis::Script::new(source).get_hash().into();
        Script {
            source: source.into(),
            sha1,
        }
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The SHA1 the server knows it by, in hex.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// The start of a call: `EVALSHA sha1`, or with `eval` (after the
    /// server answered `NOSCRIPT`) `EVAL source`; numkeys, keys and
    /// arguments follow.
    pub(crate) fn invocation(&self, eval: bool) -> Cmd {
        let mut cmd;
        if eval {
            cmd = redis::cmd("EVAL");
            cmd.arg(self.source());
        } else {
            cmd = redis::cmd("EVALSHA");
            cmd.arg(self.sha1());
        }
        cmd
    }
}

/// One routed request: commands that all belong to one slot.
#[derive(Clone)]
pub struct Request {
    pipeline: Pipeline,
    /// Source to send with `EVAL` when the server answers `NOSCRIPT`.
    script: Option<Arc<str>>,
    /// Blocks the connection it runs on (see [`Request::blocking`]).
    blocking: bool,
}

impl Request {
    /// One command.
    pub fn cmd(cmd: Cmd) -> Request {
        Request::pipeline([cmd])
    }

    /// Several commands, sent in one write and answered in order. Not a
    /// transaction: each command succeeds or fails on its own.
    pub fn pipeline(cmds: impl IntoIterator<Item = Cmd>) -> Request {
        let mut pipeline = Pipeline::new();
        for cmd in cmds {
            pipeline.add_command(cmd);
        }
        Request {
            pipeline,
            script: None,
            blocking: false,
        }
    }

    /// `EVALSHA sha numkeys keys… args…`, falling back to `EVAL` on `NOSCRIPT`.
    pub fn script<K, A>(script: &Script, keys: &[K], args: &[A]) -> Request
    where
        K: ToRedisArgs,
        A: ToRedisArgs,
    {
        let mut cmd = script.invocation(false);
        cmd.arg(keys.len()).arg(keys).arg(args);
        let mut request = Request::cmd(cmd);
        request.script = Some(script.source.clone());
        request
    }

    /// The same request with `cmd` sent after it, in the same write.
    pub fn then(mut self, cmd: Cmd) -> Request {
        self.pipeline.add_command(cmd);
        self
    }

    /// Marks the request as one that blocks the connection it runs on
    /// (`WAIT`, which Redis answers only when enough replicas acknowledge
    /// or its timeout passes, holding every later command of that
    /// connection until then). It is sent on one of the node's few
    /// dedicated connections for such requests, never on the connection
    /// shared by all other traffic, and all its commands go on the same
    /// one (`WAIT` counts the writes of its own connection).
    pub fn blocking(mut self) -> Request {
        self.blocking = true;
        self
    }

    /// Whether [`blocking`](Self::blocking) was set.
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// Number of replies this request produces.
    pub fn len(&self) -> usize {
        self.pipeline.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.pipeline.is_empty()
    }

    /// The pipeline for one attempt: `asking` puts `ASKING` before every
    /// command (its reply is at the even positions); `eval` sends the script
    /// (always the first command of a script request) by source.
    pub(crate) fn attempt(&self, asking: bool, eval: bool) -> Cow<'_, Pipeline> {
        let eval_source = self.script.as_deref().filter(|_| eval);
        if !asking && eval_source.is_none() {
            return Cow::Borrowed(&self.pipeline);
        }
        let mut pipeline = Pipeline::with_capacity(self.len() * 2);
        for (i, cmd) in self.pipeline.cmd_iter().enumerate() {
            if asking {
                pipeline.add_command(redis::cmd("ASKING"));
            }
            match eval_source {
                Some(source) if i == 0 => pipeline.add_command(as_eval(cmd, source)),
                _ => pipeline.add_command(cmd.clone()),
            };
        }
        Cow::Owned(pipeline)
    }
}

/// `EVALSHA sha rest…` → `EVAL source rest…`.
fn as_eval(evalsha: &Cmd, source: &str) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(source);
    for arg in evalsha.args_iter().skip(2) {
        if let Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(p: &Pipeline) -> String {
        String::from_utf8_lossy(&p.get_packed_pipeline()).replace("\r\n", " ")
    }

    /// Plain attempts send the request as built; ASK puts ASKING before each command.
    #[test]
    fn asking_interleaves() {
        let r = Request::pipeline([
            redis::cmd("GET").arg("a").clone(),
            redis::cmd("PING").clone(),
        ]);
        assert!(matches!(r.attempt(false, false), Cow::Borrowed(_)));
        assert_eq!(
            packed(&r.attempt(false, false)),
            "*2 $3 GET $1 a *1 $4 PING "
        );
        assert_eq!(
            packed(&r.attempt(true, false)),
            "*1 $6 ASKING *2 $3 GET $1 a *1 $6 ASKING *1 $4 PING "
        );
    }

    /// Scripts go by SHA1 first and by source after NOSCRIPT, with the same keys and args.
    #[test]
    fn script_falls_back_to_eval() {
        let s = Script::new("return 1");
        assert_eq!(s.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        let r = Request::script(&s, &["k"], &["v", "w"]);
        assert_eq!(
            packed(&r.attempt(false, false)),
            format!("*6 $7 EVALSHA $40 {} $1 1 $1 k $1 v $1 w ", s.sha1())
        );
        assert_eq!(
            packed(&r.attempt(false, true)),
            "*6 $4 EVAL $8 return 1 $1 1 $1 k $1 v $1 w "
        );
        assert_eq!(
            packed(&r.attempt(true, true)),
            "*1 $6 ASKING *6 $4 EVAL $8 return 1 $1 1 $1 k $1 v $1 w "
        );
        let r = r.then(redis::cmd("WAIT").arg(1).arg(100).clone());
        assert_eq!(
            packed(&r.attempt(false, true)),
            "*6 $4 EVAL $8 return 1 $1 1 $1 k $1 v $1 w *3 $4 WAIT $1 1 $3 100 "
        );
    }
}
