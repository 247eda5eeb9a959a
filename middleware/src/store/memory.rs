//! [`MemoryStore`]: rate-limit state in process memory.
//!
//! The key space is split over shards, each a hash table behind its own mutex, so
//! threads deciding for different keys rarely meet. A decision holds a shard lock for
//! the length of a few integer operations and never across an `.await`.
//!
//! **One hash per key, no allocation per lookup.** A key is hashed once; the shard is
//! chosen from bits 32 and up of that hash and the shard's table (a
//! `hashbrown::HashTable`, which takes the hash from its caller) is probed with the same
//! hash. The table uses the low bits to pick a bucket and the top seven as its tag, so
//! the shard bits are ones the table does not look at (for fewer than 2³² buckets and
//! 2²⁵ shards). Lookups compare `&str` against the stored key; a key is copied into a
//! `Box<str>` only when it is first inserted. Each entry keeps its hash, so growing a
//! table never hashes a key again.
//!
//! **Hash flooding.** Keys are chosen by clients (a header, an address), so a hash a
//! client could predict would let it pile its keys into one bucket chain and make every
//! decision of that shard slow. The hasher is foldhash's `fast` variant with a random
//! seed per process and per store: several times faster than the standard library's
//! SipHash on the short keys rate limiting uses, and colliding keys can only be found
//! by guessing the 64-bit seed. (It is not a cryptographic MAC, and nothing here needs
//! one: the worst a successful flood could do is slow one shard, never a wrong verdict.)
//!
//! Memory is bounded: each shard holds at most `max_keys / shards` entries. State
//! whose time to live has passed is invisible at once and removed when its shard fills
//! up; if a full shard holds only live keys, the eighth that would expire soonest is
//! dropped. Dropping live state forgets what those keys spent, so size `max_keys` above
//! the number of keys active within one period (each entry costs about 100 bytes plus
//! its key).
//!
//! A batch touching several shards locks them in index order, so two batches can never
//! wait on each other.

use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{Charged, Check, Store, StoreError, StoreFuture};
use crate::algorithm::{self, State, Verdict};
use crate::clock::{Clock, MonotonicClock};

const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Rate-limit state in process memory: exact for one process, shared by nothing else.
///
/// ```
/// use std::time::Duration;
/// use tollgate::store::{Check, MemoryStore};
/// use tollgate::{LimitSpec, ManualClock};
///
/// let clock = ManualClock::new(1_700_000_000_000_000);
/// let store = MemoryStore::builder().clock(clock.clone()).build();
/// let limit = Check::new("user-1", "2/s".parse()?);
/// let checks = std::slice::from_ref(&limit);
///
/// assert!(store.decide(checks, 1)[0].allowed);
/// assert!(store.decide(checks, 1)[0].allowed);
/// assert!(!store.decide(checks, 1)[0].allowed);
/// clock.advance(Duration::from_millis(500));
/// assert!(store.decide(checks, 1)[0].allowed);
/// # Ok::<(), tollgate::SpecError>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Seeded at random per process and per store: see "Hash flooding" in the module docs.
type Hasher = foldhash::fast::RandomState;

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
}

struct Shard {
    table: HashTable<Slot>,
}

/// One key's state, with the key's hash so the table can grow without rehashing keys.
struct Slot {
    hash: u64,
    key: Box<str>,
    entry: Entry,
}

#[derive(Clone, Copy)]
struct Entry {
    state: State,
    expires_at: i64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field(
                "max_keys",
                &(self.inner.per_shard * self.inner.shards.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

/// Configures a [`MemoryStore`].
#[derive(Clone)]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    shards: usize,
    /// `None`: a [`MonotonicClock`], made at `build` (the first one calibrates).
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for MemoryStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl MemoryStoreBuilder {
    /// The most keys held at once (default 1,000,000). At least one per shard is kept.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The number of shards (default: 4 × available cores, rounded up to a power of two).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// The clock to read (default: a [`MonotonicClock`](crate::MonotonicClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let shards = self.shards.next_power_of_two();
        let per_shard = self.max_keys.div_ceil(shards).max(1);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| {
                        Mutex::new(Shard {
                            table: HashTable::new(),
                        })
                    })
                    .collect(),
                per_shard,
                hasher: Hasher::default(),
                clock: self
                    .clock
                    .unwrap_or_else(|| Arc::new(MonotonicClock::new())),
            }),
        }
    }
}

impl MemoryStore {
    /// A store with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a store.
    pub fn builder() -> MemoryStoreBuilder {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            shards: cores * 4,
            clock: None,
        }
    }

    /// Decides a batch at the store clock's current time.
    pub fn decide(&self, checks: &[Check], cost: u64) -> Vec<Verdict> {
        self.decide_at(self.inner.clock.now_us(), checks, cost)
    }

    /// Decides one check at the store clock's current time, returning its verdict by
    /// value: the single-limit path allocates nothing.
    pub fn decide_one(&self, check: &Check, cost: u64) -> Verdict {
        self.decide_one_at(self.inner.clock.now_us(), check, cost)
    }

    /// [`decide_one`](Self::decide_one) as if the time were `now_us`.
    pub fn decide_one_at(&self, now_us: i64, check: &Check, cost: u64) -> Verdict {
        self.decide_key_at(now_us, &check.key, &check.spec, cost)
    }

    /// One limit under `key`, as if the time were `now_us`: the key is borrowed, and
    /// copied only if the store has never seen it.
    pub(crate) fn decide_key_at(
        &self,
        now_us: i64,
        key: &str,
        spec: &algorithm::LimitSpec,
        cost: u64,
    ) -> Verdict {
        let hash = self.hash(key);
        let mut shard = self.lock(self.shard_of(hash));
        // The common case, a known key: one probe to read and update in place.
        if let Some(slot) = shard.find_mut(hash, key) {
            let state = (slot.entry.expires_at > now_us).then_some(slot.entry.state);
            let out = algorithm::decide(spec, now_us, state, cost);
            if let Some((state, ttl_us)) = out.next {
                slot.entry = Entry {
                    state,
                    expires_at: now_us.saturating_add(ttl_us),
                };
            }
            return out.verdict;
        }
        let out = algorithm::decide(spec, now_us, None, cost);
        if let Some(next) = out.next {
            shard.insert_new(hash, key, next, now_us, self.inner.per_shard);
        }
        out.verdict
    }

    /// Decides a batch as if the time were `now_us`.
    pub fn decide_at(&self, now_us: i64, checks: &[Check], cost: u64) -> Vec<Verdict> {
        match checks {
            [] => Vec::new(),
            [only] => vec![self.decide_one_at(now_us, only, cost)],
            _ => self.decide_many(now_us, checks, cost),
        }
    }

    fn decide_many(&self, now_us: i64, checks: &[Check], cost: u64) -> Vec<Verdict> {
        let hashes: Vec<u64> = checks.iter().map(|c| self.hash(&c.key)).collect();
        let indexes: Vec<usize> = hashes.iter().map(|&h| self.shard_of(h)).collect();
        let mut order = indexes.clone();
        order.sort_unstable();
        order.dedup();
        // Position of each check's shard among the guards, locked in ascending order.
        let slots: Vec<usize> = indexes
            .iter()
            .map(|i| order.partition_point(|o| o < i))
            .collect();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order.iter().map(|&i| self.lock(i)).collect();
        let outcomes: Vec<_> = checks
            .iter()
            .zip(&slots)
            .zip(&hashes)
            .map(|((check, &slot), &hash)| guards[slot].decide(now_us, hash, check, cost))
            .collect();
        if outcomes.iter().all(|o| o.verdict.allowed) {
            for (((check, &slot), &hash), outcome) in
                checks.iter().zip(&slots).zip(&hashes).zip(&outcomes)
            {
                if let Some(next) = outcome.next {
                    guards[slot].store(hash, &check.key, next, now_us, self.inner.per_shard);
                }
            }
            return outcomes.into_iter().map(|o| o.verdict).collect();
        }
        // Refused: nothing was consumed, so a limit that would have admitted reports its
        // state as it is, not as if this request had been counted.
        outcomes
            .into_iter()
            .zip(checks.iter().zip(&slots).zip(&hashes))
            .map(|(outcome, ((check, &slot), &hash))| {
                if outcome.verdict.allowed {
                    guards[slot].decide(now_us, hash, check, 0).verdict
                } else {
                    outcome.verdict
                }
            })
            .collect()
    }

    /// The number of keys held, including expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| self.lock_shard(s).table.len())
            .sum()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired key now (they are invisible anyway; this frees memory).
    pub fn purge_expired(&self) {
        let now = self.inner.clock.now_us();
        for shard in self.inner.shards.iter() {
            self.lock_shard(shard)
                .table
                .retain(|s| s.entry.expires_at > now);
        }
    }

    fn hash(&self, key: &str) -> u64 {
        self.inner.hasher.hash_one(key)
    }

    fn shard_of(&self, hash: u64) -> usize {
        // Power-of-two shard count: a mask over bits the tables do not use (module docs).
        ((hash >> 32) as usize) & (self.inner.shards.len() - 1)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.lock_shard(&self.inner.shards[index])
    }

    fn lock_shard<'a>(&self, shard: &'a Mutex<Shard>) -> MutexGuard<'a, Shard> {
        shard.lock()
    }
}

/// `a == b`, without a `memcmp` call for the usual storage key of 8 to 16 bytes: two
/// overlapping 8-byte words cover it. (`perf`: the call was 5 % of an end-to-end
/// decision, for a 14-byte key.)
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            s.get(at..at + 8)
                .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])))
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

impl Shard {
    fn find_mut(&mut self, hash: u64, key: &str) -> Option<&mut Slot> {
        self.table.find_mut(hash, |s| same_key(&s.key, key))
    }

    fn decide(&self, now_us: i64, hash: u64, check: &Check, cost: u64) -> algorithm::Outcome {
        let state = self
            .table
            .find(hash, |s| *s.key == *check.key)
            .filter(|s| s.entry.expires_at > now_us)
            .map(|s| s.entry.state);
        algorithm::decide(&check.spec, now_us, state, cost)
    }

    fn store(&mut self, hash: u64, key: &str, next: (State, i64), now_us: i64, cap: usize) {
        if let Some(slot) = self.find_mut(hash, key) {
            slot.entry = Entry {
                state: next.0,
                expires_at: now_us.saturating_add(next.1),
            };
            return;
        }
        self.insert_new(hash, key, next, now_us, cap);
    }

    /// Inserts a key the table does not hold, making room first if the shard is full.
    fn insert_new(
        &mut self,
        hash: u64,
        key: &str,
        (state, ttl_us): (State, i64),
        now_us: i64,
        cap: usize,
    ) {
        if self.table.len() >= cap {
            self.evict(now_us, cap);
        }
        let slot = Slot {
            hash,
            key: key.into(),
            entry: Entry {
                state,
                expires_at: now_us.saturating_add(ttl_us),
            },
        };
        self.table.insert_unique(hash, slot, |s| s.hash);
    }

    /// Makes room: expired entries first, then the eighth of the shard that expires
    /// soonest (the state closest to being forgotten anyway).
    fn evict(&mut self, now_us: i64, cap: usize) {
        self.table.retain(|s| s.entry.expires_at > now_us);
        if self.table.len() < cap {
            return;
        }
        let mut expiries: Vec<i64> = self.table.iter().map(|s| s.entry.expires_at).collect();
        let cut = (expiries.len() / 8).max(1) - 1;
        let (_, &mut threshold, _) = expiries.select_nth_unstable(cut);
        self.table.retain(|s| s.entry.expires_at > threshold);
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
        let verdicts = self.decide(checks, cost);
        Box::pin(std::future::ready(Ok(verdicts)))
    }

    fn check_now(&self, checks: &[Check], cost: u64) -> Option<Result<Vec<Verdict>, StoreError>> {
        Some(Ok(self.decide(checks, cost)))
    }

    fn check_one_now(&self, check: &Check, cost: u64) -> Option<Result<Verdict, StoreError>> {
        Some(Ok(self.decide_one(check, cost)))
    }

    fn is_local(&self) -> bool {
        true
    }

    fn charge<'a>(&'a self, check: &'a Check, units: u64) -> StoreFuture<'a, Charged> {
        Box::pin(std::future::ready(Ok(self.charge_one(check, units))))
    }

    fn give_back<'a>(&'a self, check: &'a Check, mark: i64, units: u64) -> StoreFuture<'a, ()> {
        self.give_back_one(check, mark, units);
        Box::pin(std::future::ready(Ok(())))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

// --- Leases (issue 13): charge with a refund mark, and give back. ---
// Kept apart from the decision path above: each runs under the key's shard lock, so the
// mark is the one this admission wrote and a refund sees the state it changes.
impl MemoryStore {
    fn charge_one(&self, check: &Check, units: u64) -> Charged {
        let now_us = self.inner.clock.now_us();
        let hash = self.hash(&check.key);
        let mut shard = self.lock(self.shard_of(hash));
        let out = shard.decide(now_us, hash, check, units);
        let mark = out.next.map(|(state, _)| algorithm::refund_mark(&state));
        if let Some(next) = out.next {
            shard.store(hash, &check.key, next, now_us, self.inner.per_shard);
        }
        Charged::new(out.verdict, mark)
    }

    fn give_back_one(&self, check: &Check, mark: i64, units: u64) {
        let now_us = self.inner.clock.now_us();
        let hash = self.hash(&check.key);
        let mut shard = self.lock(self.shard_of(hash));
        let Some(Slot { entry, .. }) = shard.find_mut(hash, &check.key) else {
            return;
        };
        let state = (entry.expires_at > now_us).then_some(entry.state);
        if let Some((state, ttl_us)) = algorithm::refund(&check.spec, now_us, state, mark, units) {
            *entry = Entry {
                state,
                expires_at: now_us.saturating_add(ttl_us),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::LimitSpec;

    /// `same_key` agrees with `==` for every length around its word path, whatever
    /// byte differs.
    #[test]
    fn same_key_is_string_equality() {
        for len in 0..=20 {
            let a: String = (0..len).map(|i| char::from(b'a' + i as u8)).collect();
            assert!(same_key(&a, &a.clone()), "{a}");
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                let b = String::from_utf8(b).expect("ascii");
                assert!(!same_key(&a, &b), "{a} {b}");
            }
            assert!(!same_key(&a, &format!("{a}x")));
        }
    }

    fn one_per_hour() -> LimitSpec {
        "1/h".parse().expect("valid spec")
    }

    /// Every slot sits in the shard its own hash names and is found again by probing
    /// with that hash: what the single and the batch path both rely on.
    fn assert_consistent(store: &MemoryStore) {
        for (index, shard) in store.inner.shards.iter().enumerate() {
            let shard = store.lock_shard(shard);
            for slot in shard.table.iter() {
                assert_eq!(slot.hash, store.hash(&slot.key), "{}", slot.key);
                assert_eq!(store.shard_of(slot.hash), index, "{}", slot.key);
                let found = shard.table.find(slot.hash, |s| s.key == slot.key);
                assert!(found.is_some(), "{} not found in its own shard", slot.key);
            }
        }
    }

    #[test]
    fn one_hash_finds_each_key_in_its_shard_from_either_path() {
        let store = MemoryStore::builder().shards(64).build();
        let checks: Vec<Check> = (0..4096)
            .map(|i| Check::new(format!("client-{i}"), one_per_hour()))
            .collect();
        for check in &checks {
            assert!(store.decide_one(check, 1).allowed, "{}", check.key);
        }
        assert_eq!(store.len(), checks.len());
        // Keys are spread: a shard choice that reused the table's own bits would pile
        // them into few shards (or few buckets); every one of the 64 holds some.
        for shard in store.inner.shards.iter() {
            assert!(!store.lock_shard(shard).table.is_empty());
        }
        assert_consistent(&store);
        // The batch path (several shards locked in order) finds what the single path
        // stored: each pair is refused, and nothing new was inserted.
        for pair in checks.chunks(2) {
            let verdicts = store.decide(pair, 1);
            assert!(verdicts.iter().all(|v| !v.allowed), "{}", pair[0].key);
        }
        assert_eq!(store.len(), checks.len());
        // And the single path finds what the batch path stored.
        let fresh: Vec<Check> = (0..64)
            .map(|i| Check::new(format!("batch-{i}"), one_per_hour()))
            .collect();
        assert!(store.decide(&fresh, 1).iter().all(|v| v.allowed));
        for check in &fresh {
            assert!(!store.decide_one(check, 1).allowed, "{}", check.key);
        }
    }

    #[test]
    fn eviction_and_growth_keep_every_key_findable_and_the_bound() {
        let store = MemoryStore::builder().max_keys(1_000).shards(4).build();
        for i in 0..20_000 {
            let check = Check::new(format!("churn-{i}"), one_per_hour());
            assert!(store.decide_one(&check, 1).allowed);
            if i % 997 == 0 {
                assert_consistent(&store);
            }
        }
        assert!(store.len() <= 1_000, "{} keys held", store.len());
        assert_consistent(&store);
        // The newest key of each shard survived its last eviction.
        let last = Check::new("churn-19999", one_per_hour());
        assert!(!store.decide_one(&last, 1).allowed);
    }
}
