//! The `hoard` command, in two binaries.
//!
//! - `hoard` (`src/main.rs`) is what jobs and users run: the daemon's clients `get`, `ls`,
//!   `artifacts`, `versions`, `status`, `publish` (`publish.rs`), `pin`, `unpin`, `pins`,
//!   `gc` and `verify` (`cache.rs`), defined in this library. It links neither RocksDB nor
//!   the daemon: a binary of about 5 MB that starts in under 2 ms, where the whole
//!   program is 30 MB and runs RocksDB's C++ static initializers at every start.
//! - `hoardd` (`src/bin/hoardd/`) is the whole program: those clients, and `daemon`,
//!   `registry serve` / `registry import`, `demo`, `config check` and `completions`.
//!   `hoard` hands these to the `hoardd` beside it ([`hand_over`]), with the same
//!   arguments, so `hoard daemon` is the command to type and to put in a unit file.
//!   `cargo run -p hoard-cli` runs `hoardd`, which never hands over.
//!
//! Both parse [`Cli`], over subcommands of their own.
//!
//! Both print the error chain with `{:#}` and exit non-zero; a closed stdout
//! (`hoard … | head`) is a normal exit ([`exit`]).

pub mod cache;
pub mod discover;
pub mod env;
pub mod get;
pub mod paths;
pub mod process;
pub mod progress;
pub mod publish;
pub mod values;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The command line of both binaries: the global options, and `C`, their subcommands
/// (`hoard`'s name the ones it hands over; `hoardd`'s run them).
#[derive(Parser)]
#[command(
    name = "hoard",
    bin_name = "hoard",
    version,
    about = "A local-first, content-addressed artifact cache"
)]
pub struct Cli<C: Subcommand> {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: C,
}

/// The daemon's clients: the subcommands both binaries run themselves.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Materialize a version (or part of it) into a directory.
    Get(get::GetArgs),
    /// List the files of a version: path, size, digest, ref.
    Ls(get::LsArgs),
    /// List the artifacts of a project upstream.
    Artifacts(discover::ArtifactsArgs),
    /// List an artifact's versions and aliases upstream, and how much of each is cached.
    Versions(discover::VersionsArgs),
    /// What the daemon holds and has done, and publishes not yet uploaded.
    Status(get::StatusArgs),
    /// Publish local files as a new version: usable here at once, uploaded when possible.
    Publish(publish::PublishArgs),
    /// Fetch a version if needed and keep it from eviction.
    Pin(cache::PinArgs),
    /// Let a pinned version be evicted again.
    Unpin(cache::PinArgs),
    /// List pinned versions.
    Pins(cache::PinsArgs),
    /// Evict now, down to a target size (or show what would go with `--dry-run`).
    Gc(cache::GcArgs),
    /// Re-hash every cached blob; bad ones are quarantined and fetched again when needed.
    Verify(cache::VerifyArgs),
}

impl ClientCommand {
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            Self::Get(args) => get::get(args),
            Self::Artifacts(args) => discover::artifacts(args),
            Self::Versions(args) => discover::versions(args),
            Self::Ls(args) => get::ls(args),
            Self::Status(args) => get::status(args),
            Self::Publish(args) => publish::publish(args),
            Self::Pin(args) => cache::pin(args),
            Self::Unpin(args) => cache::unpin(args),
            Self::Pins(args) => cache::pins(args),
            Self::Gc(args) => cache::gc(args),
            Self::Verify(args) => cache::verify(args),
        }
    }
}

/// The one-line help of the subcommands that `hoardd` runs, for both binaries' `--help`.
pub mod about {
    pub const DAEMON: &str = "Run the daemon: the cache, served on a Unix socket";
    pub const CONFIG: &str = "Check a `hoard.toml` (the one the daemon would load, or FILE)";
    pub const COMPLETIONS: &str =
        "Print a shell completion script: `hoard completions bash > /etc/bash_completion.d/hoard`";
    pub const DEMO: &str =
        "A sample dataset, a registry and a daemon in a temp dir: a cold and a warm `get`";
    pub const REGISTRY: &str = "The hoard registry: the upstream server teams self-host";
}

/// The subcommands `hoard` hands to `hoardd`.
pub const SERVER_COMMANDS: [&str; 5] = ["daemon", "config", "completions", "demo", "registry"];

/// The first word of `args` (without the program's name) that is a subcommand, past the
/// global `--log-format`; for `help X`, X.
pub fn subcommand(args: &[OsString]) -> Option<&str> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if word == "--log-format" {
            words.next();
        } else if word == "help" {
            return words
                .find_map(|w| w.to_str().filter(|w| !w.starts_with('-')))
                .or(Some(word));
        } else if !word.starts_with('-') {
            return Some(word);
        }
    }
    None
}

/// Runs `hoardd`, the binary beside this one, in place of this process, with this
/// process's arguments; returns only if it could not.
pub fn hand_over(command: &str) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let server = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("hoardd"),
        Err(e) => return anyhow::anyhow!("Failed to find this program's path: {e}"),
    };
    let e = std::process::Command::new(&server)
        .args(std::env::args_os().skip(1))
        .exec();
    if e.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "`hoard {command}` is run by `hoardd`, which is not beside this `hoard` (`{}`): \
             the two are built and installed together (`cargo build --release -p hoard-cli`, \
             `cargo install --path crates/cli`)",
            server.display()
        )
    } else {
        anyhow::Error::new(e).context(format!("Failed to run `{}`", server.display()))
    }
}

/// The format of the log on stderr.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `HOARD_LOG`, else `RUST_LOG`, else `default`; logs go to stderr, stdout is for data.
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = std::env::var(env::HOARD_LOG)
        .or_else(|_| std::env::var(env::RUST_LOG))
        .unwrap_or_else(|_| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The process's exit: the error chain on stderr, a closed stdout is a success.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr().lock(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    fn first(args: &[&str]) -> Option<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        super::subcommand(&args).map(str::to_owned)
    }

    #[test]
    fn the_subcommand_is_found_past_the_global_flag_and_help() {
        assert_eq!(
            first(&["daemon", "--socket", "x"]).as_deref(),
            Some("daemon")
        );
        assert_eq!(
            first(&["--log-format", "json", "daemon"]).as_deref(),
            Some("daemon")
        );
        assert_eq!(
            first(&["--log-format=json", "registry", "serve"]).as_deref(),
            Some("registry")
        );
        assert_eq!(first(&["help", "demo"]).as_deref(), Some("demo"));
        assert_eq!(first(&["help"]).as_deref(), Some("help"));
        assert_eq!(
            first(&["get", "a/b:v0", "--root", "daemon"]).as_deref(),
            Some("get")
        );
        assert_eq!(first(&["--version"]), None);
    }
}
