//! Leases (issue 13) on Redis: a charge that returns its refund mark, and the give-back.
//!
//! Both run `decide.lua` in the modes the Redis Cluster's spanning decisions already use
//! (`charge` appends one mark per limit, `refund` gives back what the admission with that
//! mark consumed), so a lease is decided by the same script, atomically, on the Redis
//! clock, as every exact decision.

use super::{Mode, RedisStore};
use crate::store::{Charged, Check, StoreError};

impl RedisStore {
    pub(super) async fn charge_one(
        &self,
        check: &Check,
        units: u64,
    ) -> Result<Charged, StoreError> {
        let (verdicts, marks) = self
            .eval(std::iter::once(check), units, Mode::Charge)
            .await?;
        let verdict = verdicts
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::protocol("no verdict for a one-limit charge"))?;
        // The script appends a mark only when it admitted and wrote.
        let mark = verdict.allowed.then(|| marks.first().copied()).flatten();
        Ok(Charged::new(verdict, mark))
    }

    pub(super) async fn give_back_one(
        &self,
        check: &Check,
        mark: i64,
        units: u64,
    ) -> Result<(), StoreError> {
        self.eval(std::iter::once(check), units, Mode::Refund(&[mark]))
            .await
            .map(drop)
    }
}
