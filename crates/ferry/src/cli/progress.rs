//! Progress on long runs, on stderr, only when a person is watching (stderr
//! is a terminal); scripts and pipes see nothing of it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Records per second as a whole number (indicatif's own has decimals).
fn rate(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = write!(out, "{:.0}/s", state.per_sec());
}

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A running count with its rate, for runs of unknown length.
pub fn counter(what: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} {msg} ({rate}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("rate", rate),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// A bar towards `total`.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {human_pos}/{human_len} {msg} ({rate}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", rate),
    );
    bar.set_message(what.to_string());
    bar
}

/// Whether records printed on stdout would collide with a progress line.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
