//! What every command does to its process: print a line of data, raise the open-files
//! limit.

use std::io::{self, Write};

/// Raises the soft limit on open files to the hard limit: servers hold a descriptor per
/// connection and per blob in flight, and 1,024 is easy to reach.
pub(crate) fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "could not raise the open-files limit");
        }
    }
}

/// `1 file`, `2 files`: a count and its noun, in the number it needs (`noun` takes an
/// `s` for the plural).
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line of data on stdout.
pub(crate) fn out(line: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
