//! Decisions whose limits live in different Redis Cluster hash slots.
//!
//! The limiter stores each limit under `{policy:key}:limit`, so the limits of a policy
//! that share a key share a slot and are decided by one script, as on a single Redis.
//! A policy whose limits use different keys (per API key *and* global) spans slots,
//! which no single script can touch. It is decided slot by slot:
//!
//! 1. The slots are visited in a fixed order, the order their first limit has in the
//!    policy. Each visit runs the script in `charge` mode: that slot's limits admit and
//!    consume atomically, or refuse and consume nothing.
//! 2. When every slot admits, the request is admitted.
//! 3. When a slot refuses, the slots already charged are given back what they consumed
//!    (`refund` mode: [`crate::algorithm::refund`], exact for the windows, never more
//!    than consumed for GCRA), the slots not yet visited are asked without consuming
//!    (`probe` mode) so every limit reports its state, and the request is refused.
//!
//! No limit ever admits more than it allows: each slot's admission is atomic and counted
//! before the next slot is asked, and a refund only returns what this request took.
//! The price is a window of spurious refusals: between a slot's charge and its refund
//! (one or two round trips, a few milliseconds), a concurrent request may be refused
//! for capacity that is about to be given back. Put the limit that refuses most often
//! (usually the most specific one) first in the policy: a request it refuses then
//! consumes nothing elsewhere.
//!
//! A charge or probe that fails returns the error (the failure mode answers), after
//! giving back what was charged; a refund that fails leaves its consumption counted
//! (an over-count, never an over-admission), as does a decision the limiter's timeout
//! cancels between two slots.

use super::{Mode, RedisStore};
use crate::algorithm::Verdict;
use crate::store::{Check, StoreError};

/// A key's hash tag as Redis Cluster reads it: what lies between the first `{` and the
/// next `}` when that is not empty, else the whole key. Keys with equal tags share a
/// slot (keys with different tags may too; they just take a round trip each).
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The checks grouped by hash tag, in the order each tag first appears; `None` when
/// they all share one (one script decides them, the usual case).
pub(super) fn groups(keys: &[String]) -> Option<Vec<Vec<usize>>> {
    let first = hash_tag(keys.first()?);
    if keys.iter().all(|k| hash_tag(k) == first) {
        return None;
    }
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let tag = hash_tag(key);
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, members)) => members.push(i),
            None => groups.push((tag, vec![i])),
        }
    }
    Some(groups.into_iter().map(|(_, members)| members).collect())
}

/// Decides `checks` slot group by slot group (see the module docs).
pub(super) async fn decide(
    store: &RedisStore,
    checks: &[Check],
    groups: &[Vec<usize>],
    cost: u64,
) -> Result<Vec<Verdict>, StoreError> {
    let mut verdicts: Vec<Option<Verdict>> = vec![None; checks.len()];
    let mut charged: Vec<(&[usize], Vec<i64>)> = Vec::with_capacity(groups.len());
    let mut refused = None;
    for (g, members) in groups.iter().enumerate() {
        let group = members.iter().map(|&i| &checks[i]);
        match store.eval(group, cost, Mode::Charge).await {
            Ok((answer, marks)) => {
                let admitted = answer.iter().all(|v| v.allowed);
                place(&mut verdicts, members, answer);
                if !admitted {
                    refused = Some(g);
                    break;
                }
                charged.push((members, marks));
            }
            Err(error) => {
                give_back(store, checks, &charged, cost, &mut verdicts).await;
                return Err(error);
            }
        }
    }
    if let Some(refused) = refused {
        give_back(store, checks, &charged, cost, &mut verdicts).await;
        for members in &groups[refused + 1..] {
            let group = members.iter().map(|&i| &checks[i]);
            let (answer, _) = store.eval(group, cost, Mode::Probe).await?;
            place(&mut verdicts, members, answer);
        }
    }
    verdicts
        .into_iter()
        .map(|v| v.ok_or_else(|| StoreError::protocol("a slot group went unanswered")))
        .collect()
}

/// Refunds every charged group; a group whose refund fails keeps its charge's verdicts.
async fn give_back(
    store: &RedisStore,
    checks: &[Check],
    charged: &[(&[usize], Vec<i64>)],
    cost: u64,
    verdicts: &mut [Option<Verdict>],
) {
    for (members, marks) in charged {
        let group = members.iter().map(|&i| &checks[i]);
        match store.eval(group, cost, Mode::Refund(marks)).await {
            Ok((answer, _)) => place(verdicts, members, answer),
            Err(error) => {
                tracing::debug!(%error, "refund failed; the consumption stays counted");
            }
        }
    }
}

fn place(verdicts: &mut [Option<Verdict>], members: &[usize], answer: Vec<Verdict>) {
    for (&i, verdict) in members.iter().zip(answer) {
        verdicts[i] = Some(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_redis_cluster_rules() {
        assert_eq!(hash_tag("p:{api:k1}:minute"), "api:k1");
        assert_eq!(hash_tag("p:{}:x{y}"), "p:{}:x{y}");
        assert_eq!(hash_tag("p:{unclosed"), "p:{unclosed");
        assert_eq!(hash_tag("{a}{b}"), "a");
    }

    #[test]
    fn groups_keep_first_appearance_order() {
        let keys: Vec<String> = ["t:{a:1}:x", "t:{a:1}:y"].map(String::from).to_vec();
        assert_eq!(groups(&keys), None);
        let keys: Vec<String> = ["t:{b:1}:x", "t:{a:*}:g", "t:{b:1}:y"]
            .map(String::from)
            .to_vec();
        assert_eq!(groups(&keys), Some(vec![vec![0, 2], vec![1]]));
    }
}
