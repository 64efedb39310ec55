//! How commands print: `--output text` for people, `--output json` for scripts, and a progress
//! spinner on long commands that only a terminal sees.
//!
//! JSON output is one document on stdout per command (a stream, `herald history`, is one JSON
//! object per line), so `herald … --output json | jq` always parses. Warnings and errors stay on
//! stderr as text in both modes.

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// The global `--output` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines and tables for people.
    #[default]
    Text,
    /// One JSON document on stdout (JSON lines for `history`).
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Self::Json
    }

    /// Prints `value` as one JSON document on stdout.
    pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// A spinner with a message and the elapsed time on stderr, drawn only when stderr is a terminal:
/// piped or redirected output carries no progress text. Dropping it clears it.
pub struct Progress(ProgressBar);

impl Progress {
    /// Starts a spinner saying `message` (e.g. "reading herald.deliveries").
    pub fn start(message: impl Into<String>) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        // The template is a constant; indicatif only refuses malformed ones.
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(bar)
    }

    /// Changes the message, e.g. from reading to sending.
    pub fn say(&self, message: impl Into<String>) {
        self.0.set_message(message.into());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
