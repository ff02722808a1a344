//! What every command does to its process: print a line of data, raise the open-files
//! limit, and (the daemon) bound the allocator's arenas.

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

/// Bounds glibc's malloc to two arenas. By default it makes one per thread that contends,
/// up to 8 per core, and keeps what each grew to: a cold get of 20,000 files left three
/// arenas of 14–20 MiB and a daemon of 77–88 MiB RSS, 73 MiB with two (`MALLOC_ARENA_MAX=2`,
/// which the environment still overrides), with no change in the benchmark's times.
pub(crate) fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a parameter of the allocator; it takes no pointers
        // and is called before the daemon starts its threads.
        #[expect(unsafe_code, reason = "glibc's mallopt has no safe wrapper")]
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        if set != 1 {
            tracing::debug!("could not bound malloc's arenas");
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

/// Columns padded to their widest cell; the last one is not padded.
pub(crate) fn table(
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> anyhow::Result<()> {
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
