//! A fetch's progress on stderr. On a terminal, a bar of the bytes (indicatif); elsewhere
//! (logs, CI), a plain line at most every `PLAIN_EVERY` (5 s), so a long fetch shows it is
//! alive. Both say the same thing, in the words the Python client uses too:
//! `fetching 3/10 blobs, 120 MiB / 777 MiB, 45.0 MiB/s, ETA 14 s`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use hoard_types::api::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use hoard_types::human_bytes as bytes;

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    /// `--quiet`: warnings only.
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    /// When the first report came: the rate is measured from there.
    started: Option<Instant>,
    last_plain: Option<Instant>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: None,
            started: None,
            last_plain: None,
        }
    }

    pub fn event(&mut self, event: &Event) {
        match event {
            Event::Progress {
                fetched_blobs,
                missing_blobs,
                fetched_bytes,
                missing_bytes,
            } if !self.quiet => {
                let started = *self.started.get_or_insert_with(Instant::now);
                let text = line(
                    (*fetched_blobs, *missing_blobs),
                    (*fetched_bytes, *missing_bytes),
                    started.elapsed(),
                );
                if self.tty {
                    let bar = self.bar.get_or_insert_with(|| new_bar(*missing_bytes));
                    bar.set_position(*fetched_bytes);
                    bar.set_message(text);
                } else {
                    let due = self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                    // The first report only says how much is missing; plain lines start
                    // once fetching has taken a while.
                    if due && self.last_plain.is_some() {
                        let _ = writeln!(std::io::stderr().lock(), "{text}");
                    }
                    if due {
                        self.last_plain = Some(Instant::now());
                    }
                }
            }
            Event::Progress { .. } | Event::Resolved(_) => {}
            Event::Warning { message } => {
                let say = || {
                    let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
                };
                match &self.bar {
                    Some(bar) => bar.suspend(say),
                    None => say(),
                }
            }
            Event::Done(_) | Event::Error { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn new_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{wide_bar}]")
        .expect("the template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// `fetching 3/10 blobs, 120 MiB / 777 MiB, 45.0 MiB/s, ETA 14 s`: the rate over
/// `elapsed`, and the time left at that rate (`?` until something arrived).
pub fn line(
    (blobs, total_blobs): (u64, u64),
    (done, total): (u64, u64),
    elapsed: Duration,
) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let eta = if rate > 0.0 {
        format!("{:.0} s", total.saturating_sub(done) as f64 / rate)
    } else {
        "?".to_owned()
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate for display, never negative"
    )]
    let rate = rate as u64;
    format!(
        "fetching {blobs}/{total_blobs} blobs, {} / {}, {}/s, ETA {eta}",
        bytes(done),
        bytes(total),
        bytes(rate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_the_rate_and_the_time_left() {
        let line = line((3, 10), (30 << 20, 90 << 20), Duration::from_secs(2));
        assert_eq!(
            line,
            "fetching 3/10 blobs, 30.0 MiB / 90.0 MiB, 15.0 MiB/s, ETA 4 s"
        );
        let start = super::line((0, 1), (0, 5), Duration::ZERO);
        assert_eq!(start, "fetching 0/1 blobs, 0 B / 5 B, 0 B/s, ETA ?");
    }
}
