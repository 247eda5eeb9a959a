//! Path matching for policies.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// How a policy matches the request path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Every path.
    Any,
    /// The prefix itself, or below it at a `/` boundary.
    Prefix(String),
    /// A glob; `*` stays within a segment.
    Pattern(GlobMatcher),
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
    /// When the pattern is not a valid glob.
    pub fn pattern(pattern: &str) -> Result<Self, globset::Error> {
        let glob: Glob = GlobBuilder::new(pattern).literal_separator(true).build()?;
        Ok(PathMatch::Pattern(glob.compile_matcher()))
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
                None => false,
            },
            PathMatch::Pattern(glob) => glob.is_match(path),
        }
    }
}
