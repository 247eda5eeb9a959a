//! Where human-readable output goes: plain lines, lines above a progress bar, or a buffer.
//!
//! Containers and CI read stdout as a log, where a redrawn bar is noise, so the bar is only
//! drawn when stdout is a terminal (or when asked for). Tests use [`Console::capture`] to
//! assert on exactly the lines a user would see, without touching stdout.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Progress;

/// Lines collected by a capturing [`Console`].
pub type Captured = Arc<Mutex<Vec<String>>>;

/// A sink for report lines and progress.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Plain,
    Bar(ProgressBar),
    Capture(Captured),
}

impl Console {
    /// Output to stdout: a progress bar if `progress` says so (for `auto`, if stdout is a
    /// terminal), plain lines otherwise. `run` sizes the bar; `None` shows a spinner.
    pub fn stdout(progress: Progress, run: Option<Duration>) -> Self {
        let bar = match progress {
            Progress::Auto => std::io::stdout().is_terminal(),
            Progress::Always => true,
            Progress::Never => false,
        };
        if !bar {
            return Console {
                inner: Inner::Plain,
            };
        }
        let pb = match run {
            Some(d) => ProgressBar::with_draw_target(Some(millis(d)), ProgressDrawTarget::stdout())
                .with_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                        .expect("constant template is valid"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout()).with_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("constant template is valid"),
            ),
        };
        Console {
            inner: Inner::Bar(pb),
        }
    }

    /// Plain lines to stdout.
    pub fn plain() -> Self {
        Console {
            inner: Inner::Plain,
        }
    }

    /// A console that records lines instead of printing them.
    pub fn capture() -> (Self, Captured) {
        let lines = Captured::default();
        (
            Console {
                inner: Inner::Capture(lines.clone()),
            },
            lines,
        )
    }

    /// Prints one line (above the bar, if there is one).
    pub fn line(&self, text: &str) {
        match &self.inner {
            // A hidden bar (stdout redirected despite `always`) would swallow its lines.
            Inner::Bar(pb) if !pb.is_hidden() && !pb.is_finished() => pb.println(text),
            Inner::Plain | Inner::Bar(_) => println!("{text}"),
            Inner::Capture(lines) => lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(text.to_owned()),
        }
    }

    /// `true` if progress updates are shown, so callers can skip building them otherwise.
    pub fn shows_progress(&self) -> bool {
        matches!(&self.inner, Inner::Bar(pb) if !pb.is_hidden())
    }

    /// Updates the bar: `elapsed` since the start and a short status message.
    pub fn progress(&self, elapsed: Duration, message: String) {
        if let Inner::Bar(pb) = &self.inner {
            pb.set_position(millis(elapsed));
            pb.set_message(message);
            pb.tick();
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Inner::Bar(pb) = &self.inner {
            pb.finish_and_clear();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
