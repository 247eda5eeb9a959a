//! Path matching for policies.

use std::fmt;

use globset::{Glob, GlobBuilder, GlobMatcher};

/// How a policy matches the request path.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PathMatch {
    /// Every path.
    Any,
    /// The prefix itself, or below it at a `/` boundary.
    Prefix(String),
    /// A glob; `*` stays within a segment.
    Pattern(PathPattern),
}

/// A compiled path glob (see [`crate::policy::Policy::path_pattern`]). The glob engine
/// is an implementation detail: only the pattern text is visible.
#[derive(Clone)]
pub struct PathPattern {
    text: String,
    matcher: GlobMatcher,
}

impl PathPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.text)
    }
}

/// A path pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// Why it is invalid.
    pub reason: String,
}

impl PathMatch {
    /// A prefix match (see [`crate::policy::Policy::path_prefix`]).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        if prefix.is_empty() || prefix == "/" {
            PathMatch::Any
        } else {
            PathMatch::Prefix(prefix)
        }
    }

    /// A glob match (see [`crate::policy::Policy::path_pattern`]).
    ///
    /// # Errors
    ///
    /// [`PatternError`] when the pattern is not a valid glob.
    pub fn pattern(pattern: &str) -> Result<Self, PatternError> {
        let glob: Glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| PatternError {
                pattern: pattern.to_owned(),
                reason: e.kind().to_string(),
            })?;
        Ok(PathMatch::Pattern(PathPattern {
            text: pattern.to_owned(),
            matcher: glob.compile_matcher(),
        }))
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
                None => false,
            },
            PathMatch::Pattern(pattern) => pattern.matcher.is_match(path),
        }
    }
}
