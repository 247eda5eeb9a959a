//! One call of the store's script, encoded straight into a redis-rs command.
//!
//! redis-rs' `ScriptInvocation` keeps a `Vec<u8>` per key and per argument and copies
//! them all into the command when it is sent: a batch of 14 decisions paid about 80
//! small allocations for that. [`ScriptCall`] writes `EVALSHA <sha> <numkeys> keys…
//! args…` into one [`redis::Cmd`] (one buffer for the bytes, one for the argument
//! bounds), and [`ScriptCall::run`] does what `ScriptInvocation` did on `NOSCRIPT`: load
//! the script and send the same command again.

use std::io::Write;

use redis::{ErrorKind, RedisResult, RedisWrite, Script, ServerErrorKind, ToRedisArgs};

/// An encoded `EVALSHA` of one script.
pub(super) struct ScriptCall {
    cmd: redis::Cmd,
}

impl ScriptCall {
    /// `EVALSHA` of `script` over `keys`; arguments follow with [`arg`](Self::arg).
    pub(super) fn new<K: ToRedisArgs>(script: &Script, keys: &[K]) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        ScriptCall { cmd }
    }

    /// Appends `arg` (a list appends each item) as `ARGV` values.
    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the call on `con`, loading `script` first when the server does not know it
    /// (a restarted or failed-over Redis, a new cluster node).
    pub(super) async fn run<C>(&self, con: &mut C, script: &Script) -> RedisResult<Vec<i64>>
    where
        C: redis::aio::ConnectionLike,
    {
        match self.cmd.query_async(con).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(con).await?;
                self.cmd.query_async(con).await
            }
            other => other,
        }
    }
}

/// A Redis key written from its parts as one argument, with no `String` built for it.
pub(super) struct RedisKey<'a>(pub(super) [&'a str; 5]);

impl ToRedisArgs for RedisKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        for part in self.0 {
            // Writing to redis-rs' in-memory command buffer does not fail.
            let _ = arg.write_all(part.as_bytes());
        }
    }
}
