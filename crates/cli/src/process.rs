//! What the commands do to their process: print a line of data, a table, a count; raise
//! the open-files limit (the servers).

use std::io::{self, Write};

/// Raises the soft limit on open files to the hard limit: servers hold a descriptor per
/// connection and per blob in flight, and 1,024 is easy to reach.
pub fn raise_nofile_limit() {
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
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line of data on stdout.
pub fn out(line: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// Columns padded to their widest cell; the last one is not padded.
pub fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> anyhow::Result<()> {
    let mut lines = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    lines.extend(rows);
    let mut widths = vec![0; header.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{cell:<width$}  "));
            }
        }
        out(text.trim_end())?;
    }
    Ok(())
}
