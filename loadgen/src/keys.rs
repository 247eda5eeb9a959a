//! Key distributions: which rate-limit key each request carries.
//!
//! - `unique`: a fresh key per request, so the limiter never limits — a throughput baseline.
//! - `fixed:N`: N keys drawn uniformly, so each key gets `rate / N` and limiting happens as
//!   soon as that exceeds the limit.
//! - `zipf:N:s`: N keys with Zipf-distributed popularity (rank *k* drawn with weight `1/k^s`),
//!   so a few hot keys are limited hard while the long tail is not — the realistic case.
//!
//! A [`KeyPicker`] draws [`KeyId`]s with a small fast RNG (the sampling is done by `rand_distr`,
//! not by hand). For `fixed` and `zipf` the key names are built once in a [`KeySpace`] and reused,
//! so the hot path allocates no key strings. `unique` keys carry a random per-run tag so runs
//! against a long-lived limiter never share keys.

use std::fmt;
use std::str::FromStr;

use rand::rngs::{SmallRng, SysRng};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Most keys a `fixed` or `zipf` distribution may have; per-key state is kept for each.
pub const MAX_KEYS: u64 = 100_000;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// A fresh key per request.
    Unique,
    /// `n` keys, uniform.
    Fixed(u64),
    /// `n` keys, Zipf with exponent `s`.
    Zipf {
        /// Number of keys.
        n: u64,
        /// Exponent: 0 is uniform, around 1 is typical web traffic, larger is hotter.
        s: f64,
    },
}

/// Why a `KEYS` value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyDistError {
    /// The value matches none of the three forms.
    #[error("expected unique, fixed:N or zipf:N:s")]
    Syntax,
    /// N is not a whole number in range.
    #[error("N must be a whole number from 1 to {MAX_KEYS}")]
    KeyCount,
    /// s is not a finite number ≥ 0.
    #[error("s must be a number 0 or greater")]
    Exponent,
}

impl FromStr for KeyDist {
    type Err = KeyDistError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let lower = raw.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split(':').collect();
        let count = |n: &str| match n.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_KEYS).contains(&n) => Ok(n),
            _ => Err(KeyDistError::KeyCount),
        };
        match parts.as_slice() {
            ["unique"] => Ok(KeyDist::Unique),
            ["fixed", n] => Ok(KeyDist::Fixed(count(n)?)),
            ["zipf", n, s] => {
                let n = count(n)?;
                match s.trim().parse::<f64>() {
                    Ok(s) if s.is_finite() && s >= 0.0 => Ok(KeyDist::Zipf { n, s }),
                    _ => Err(KeyDistError::Exponent),
                }
            }
            _ => Err(KeyDistError::Syntax),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Unique => write!(f, "unique"),
            KeyDist::Fixed(n) => write!(f, "fixed:{n}"),
            KeyDist::Zipf { n, s } => write!(f, "zipf:{n}:{s}"),
        }
    }
}

impl KeyDist {
    /// Number of distinct keys, or `None` for `unique`.
    pub fn key_count(&self) -> Option<u64> {
        match self {
            KeyDist::Unique => None,
            KeyDist::Fixed(n) | KeyDist::Zipf { n, .. } => Some(*n),
        }
    }
}

/// A drawn key: an index into the [`KeySpace`], or a sequence number for `unique`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyId {
    /// Index of one of the N keys (rank − 1 for Zipf, so 0 is the hottest).
    Indexed(usize),
    /// The request's sequence number; the key exists for this request only.
    Unique(u64),
}

/// Draws keys according to a [`KeyDist`].
#[derive(Debug)]
pub struct KeyPicker {
    rng: SmallRng,
    sampler: Sampler,
}

#[derive(Debug)]
enum Sampler {
    Unique { next: u64 },
    Uniform { n: u64 },
    Zipf(Zipf<f64>),
}

impl KeyPicker {
    /// A picker seeded from the OS (falling back to the clock if the OS has no entropy).
    pub fn new(dist: KeyDist) -> Self {
        Self::with_rng(dist, os_seeded())
    }

    /// A picker with a fixed seed, for reproducible tests.
    pub fn seeded(dist: KeyDist, seed: u64) -> Self {
        Self::with_rng(dist, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(dist: KeyDist, rng: SmallRng) -> Self {
        let sampler = match dist {
            KeyDist::Unique => Sampler::Unique { next: 0 },
            KeyDist::Fixed(n) => Sampler::Uniform { n },
            // `FromStr` only builds n ≥ 1 and finite s ≥ 0, which is exactly what Zipf accepts;
            // a hand-built invalid one degrades to uniform rather than panicking.
            KeyDist::Zipf { n, s } => match Zipf::new(n as f64, s) {
                Ok(z) => Sampler::Zipf(z),
                Err(_) => Sampler::Uniform { n },
            },
        };
        KeyPicker { rng, sampler }
    }

    /// Draws the next key.
    pub fn next_key(&mut self) -> KeyId {
        match &mut self.sampler {
            Sampler::Unique { next } => {
                let id = *next;
                *next += 1;
                KeyId::Unique(id)
            }
            Sampler::Uniform { n } => KeyId::Indexed(self.rng.random_range(0..*n) as usize),
            // Zipf yields ranks 1..=n as floats; the cast truncates an exact integer.
            Sampler::Zipf(z) => {
                KeyId::Indexed((z.sample(&mut self.rng) as usize).saturating_sub(1))
            }
        }
    }
}

/// Key names for a run, built once.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    run_tag: String,
    names: Vec<String>,
}

impl KeySpace {
    /// Names for `dist`: `{prefix}{i}` for indexed keys, `{prefix}{tag}-{seq}` for unique ones.
    pub fn new(dist: KeyDist, prefix: &str) -> Self {
        let n = dist.key_count().unwrap_or(0);
        let mut rng = os_seeded();
        KeySpace {
            prefix: prefix.to_owned(),
            run_tag: format!("{:08x}", rng.random::<u32>()),
            names: (0..n).map(|i| format!("{prefix}{i}")).collect(),
        }
    }

    /// Number of indexed keys (0 for `unique`).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// `true` for `unique`, which has no fixed key set.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of an indexed key.
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// The key name for `id`, borrowed when possible.
    pub fn name_of(&self, id: KeyId) -> std::borrow::Cow<'_, str> {
        match id {
            KeyId::Indexed(i) => std::borrow::Cow::Borrowed(self.name(i)),
            KeyId::Unique(seq) => {
                std::borrow::Cow::Owned(format!("{}{}-{seq}", self.prefix, self.run_tag))
            }
        }
    }
}

fn os_seeded() -> SmallRng {
    SmallRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SmallRng::seed_from_u64(nanos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("unique".parse(), Ok(KeyDist::Unique));
        assert_eq!("fixed:10".parse(), Ok(KeyDist::Fixed(10)));
        assert_eq!(
            " ZIPF:100:1.2 ".parse(),
            Ok(KeyDist::Zipf { n: 100, s: 1.2 })
        );
        assert_eq!("fixed".parse::<KeyDist>(), Err(KeyDistError::Syntax));
        assert_eq!("fixed:0".parse::<KeyDist>(), Err(KeyDistError::KeyCount));
        assert_eq!("fixed:many".parse::<KeyDist>(), Err(KeyDistError::KeyCount));
        assert_eq!(
            "fixed:100001".parse::<KeyDist>(),
            Err(KeyDistError::KeyCount)
        );
        assert_eq!("zipf:10:-1".parse::<KeyDist>(), Err(KeyDistError::Exponent));
        assert_eq!(
            "zipf:10:inf".parse::<KeyDist>(),
            Err(KeyDistError::Exponent)
        );
        assert_eq!("random".parse::<KeyDist>(), Err(KeyDistError::Syntax));
    }

    #[test]
    fn display_round_trips() {
        for raw in ["unique", "fixed:7", "zipf:50:1.1"] {
            assert_eq!(
                raw.parse::<KeyDist>().map(|d| d.to_string()),
                Ok(raw.to_owned())
            );
        }
    }

    #[test]
    fn unique_keys_never_repeat() {
        let space = KeySpace::new(KeyDist::Unique, "k-");
        let mut picker = KeyPicker::seeded(KeyDist::Unique, 1);
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|_| space.name_of(picker.next_key()).into_owned())
            .collect();
        assert_eq!(names.len(), 1000);
        assert!(space.is_empty());
    }

    #[test]
    fn fixed_keys_are_roughly_uniform() {
        let mut picker = KeyPicker::seeded(KeyDist::Fixed(4), 7);
        let mut counts = [0_u32; 4];
        for _ in 0..40_000 {
            match picker.next_key() {
                KeyId::Indexed(i) => counts[i] += 1,
                KeyId::Unique(_) => panic!("fixed keys are indexed"),
            }
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(KeySpace::new(KeyDist::Fixed(4), "user-").name(3), "user-3");
    }

    #[test]
    fn zipf_keys_are_hot_at_the_head() {
        let mut picker = KeyPicker::seeded(KeyDist::Zipf { n: 100, s: 1.2 }, 7);
        let mut counts = vec![0_u32; 100];
        for _ in 0..50_000 {
            match picker.next_key() {
                KeyId::Indexed(i) => counts[i] += 1,
                KeyId::Unique(_) => panic!("zipf keys are indexed"),
            }
        }
        assert!(
            counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99],
            "{counts:?}"
        );
        // With s = 1.2 the hottest key takes roughly a quarter of the traffic.
        assert!((10_000..16_000).contains(&counts[0]), "{}", counts[0]);
    }
}
