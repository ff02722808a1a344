//! The `hoard` command.
//!
//! Subcommands: `daemon` (the cache service); its clients `get`, `ls`, `status`, `publish`
//! (`publish.rs`), `pin`, `unpin`, `pins`, `gc`, `verify` (`cache.rs`); `config check`,
//! `completions`; `demo` (a self-contained cold and warm run, then a publish); and
//! `registry serve` / `registry import` (the upstream server of record). `main` prints the
//! error chain with `{:#}` and exits non-zero; a closed stdout (`hoard … | head`) is a
//! normal exit.

mod cache;
mod config;
mod daemon;
mod demo;
mod discover;
mod env;
mod get;
mod paths;
mod process;
mod progress;
mod publish;
mod registry;
mod values;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "hoard",
    version,
    about = "A local-first, content-addressed artifact cache"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: every key known, every value usable.
    Check {
        /// The file [default: the one `hoard daemon` would read].
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: the cache, served on a Unix socket.
    Daemon(daemon::DaemonArgs),
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
    /// Check a `hoard.toml` (the one the daemon would load, or FILE).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `hoard completions bash > /etc/bash_completion.d/hoard`.
    Completions { shell: clap_complete::Shell },
    /// A sample dataset, a registry and a daemon in a temp dir: a cold and a warm `get`.
    Demo(demo::DemoArgs),
    /// The hoard registry: the upstream server teams self-host.
    #[command(subcommand)]
    Registry(registry::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story on stdout; only problems go to the log.
    let quiet = matches!(cli.command, Command::Demo(_));
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Daemon(args) => daemon::run(&args),
        Command::Get(args) => get::get(&args),
        Command::Artifacts(args) => discover::artifacts(&args),
        Command::Versions(args) => discover::versions(&args),
        Command::Ls(args) => get::ls(&args),
        Command::Status(args) => get::status(&args),
        Command::Publish(args) => publish::publish(&args),
        Command::Pin(args) => cache::pin(&args),
        Command::Unpin(args) => cache::unpin(&args),
        Command::Pins(args) => cache::pins(&args),
        Command::Gc(args) => cache::gc(&args),
        Command::Verify(args) => cache::verify(&args),
        Command::Config(ConfigCommand::Check { file }) => config::check(file.as_deref()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Written here, not by clap_complete (which panics when the reader goes away,
            // as in `hoard completions bash | true`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hoard", &mut script);
            io::stdout()
                .lock()
                .write_all(&script)
                .map_err(anyhow::Error::from)
        }
        Command::Demo(args) => demo::run(&args),
        Command::Registry(command) => registry::run(command),
    };
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

/// `HOARD_LOG`, else `RUST_LOG`, else `default`; logs go to stderr, stdout is for data.
fn init_logging(format: LogFormat, default: &str) {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the whole command tree (unique names, conflicts that exist) here, where
    /// a mistake would otherwise panic at the first run of that subcommand.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
