//! Progress bars on a terminal, silence otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar that is hidden unless stderr is a terminal and the
/// user did not ask for JSON or quiet output.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(enabled: bool) -> Self {
        let visible = enabled && std::io::stderr().is_terminal();
        let pb = if visible {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10))
        } else {
            ProgressBar::hidden()
        };
        pb.enable_steady_tick(Duration::from_millis(200));
        Self(pb)
    }

    /// Starts a phase measured in bytes.
    pub fn phase(&self, msg: &str, total: u64) {
        let style =
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_message(msg.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }

    /// Starts a phase of unknown length: a spinner with the elapsed time.
    pub fn spin(&self, msg: &str) {
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        self.0.set_style(style);
        self.0.set_message(msg.to_string());
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
