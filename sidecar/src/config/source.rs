//! Where a configuration comes from, kept so that a reload can produce it again.
//!
//! `main` turns flags, environment and file into one [`ConfigSource`] before anything
//! is bound; from there on the sidecar, reload included, sees that value and never the
//! command line. A reload does exactly what start did: read the file again, apply the
//! same overrides, validate.
//!
//! The overrides are a function rather than a [`FileConfig`] overlay merged field by
//! field because some flags are checked against the file they override (`--key`'s
//! client-IP kinds need the file's trusted proxies): they must be applied, and their
//! errors named after the flag, after every read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Config, ConfigError, FileConfig};

/// What a [`ConfigSource`] applies over the file after each read.
type Overrides = dyn Fn(&mut FileConfig) -> Result<(), ConfigError> + Send + Sync;

/// How to produce the validated [`Config`]: at start, and again on every reload.
///
/// ```
/// use tollgate_sidecar::config::{ConfigSource, UpstreamSection};
///
/// // No file: the defaults, with one upstream set as a flag would.
/// let source = ConfigSource::new(None).with_overrides(|file| {
///     file.upstreams.insert(
///         "default".into(),
///         UpstreamSection { endpoints: vec!["http://127.0.0.1:8080".into()], protocol: None },
///     );
///     Ok(())
/// });
/// let config = source.load()?;
/// assert_eq!(config.upstreams[0].name, "default");
/// # Ok::<(), tollgate_sidecar::config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ConfigSource {
    /// The TOML file, re-read on reload and watched for changes; `None` when the
    /// defaults are the base (everything comes from flags).
    path: Option<PathBuf>,
    /// Applied over what was read, every time; shared because a reload watcher keeps
    /// its own copy of the source.
    overrides: Option<Arc<Overrides>>,
}

impl ConfigSource {
    /// The file at `path` as the base, or the defaults when `None`; nothing overridden.
    pub fn new(path: Option<PathBuf>) -> Self {
        ConfigSource {
            path,
            overrides: None,
        }
    }

    /// Also applies `overrides` (typically the command line's flags) after every read.
    /// An error it returns is reported as is, so it can name the flag the user typed.
    #[must_use]
    pub fn with_overrides(
        mut self,
        overrides: impl Fn(&mut FileConfig) -> Result<(), ConfigError> + Send + Sync + 'static,
    ) -> Self {
        self.overrides = Some(Arc::new(overrides));
        self
    }

    /// The file read on every load, if any: the one a reload watcher polls.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Where validation errors are said to come from: the file's path, or `flags`.
    pub fn origin(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "flags".to_owned(), |p| p.display().to_string())
    }

    /// Reads the file (or starts from the defaults) and applies the overrides.
    ///
    /// # Errors
    ///
    /// An unreadable or unparsable file, or an error from the overrides.
    pub fn file_config(&self) -> Result<FileConfig, ConfigError> {
        let mut file = match &self.path {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        if let Some(overrides) = &self.overrides {
            overrides(&mut file)?;
        }
        Ok(file)
    }

    /// [`file_config`](Self::file_config), validated: the configuration to build from.
    ///
    /// # Errors
    ///
    /// As [`file_config`](Self::file_config), and the first field that fails
    /// [`FileConfig::validate`], reported against [`origin`](Self::origin).
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.file_config()?.validate(&self.origin())
    }
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .field("overrides", &self.overrides.is_some())
            .finish()
    }
}
