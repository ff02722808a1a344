//! `hoardd`: the whole `hoard` command (see the library's docs), which `hoard` hands the
//! subcommands that open a cache or serve: `daemon` (the cache service), `config check`,
//! `completions`, `demo` (a self-contained cold and warm run, then a publish), and
//! `registry serve` / `registry import` (the upstream server of record). The daemon's
//! clients are the library's, as in `hoard`.

mod config;
mod daemon;
mod demo;
mod registry;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hoard_cli::{ClientCommand, about};

type Cli = hoard_cli::Cli<Command>;

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: every key known, every value usable.
    Check {
        /// The file [default: the one `hoard daemon` would read].
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    #[command(about = about::DAEMON)]
    Daemon(daemon::DaemonArgs),
    #[command(flatten)]
    Client(ClientCommand),
    #[command(subcommand, about = about::CONFIG)]
    Config(ConfigCommand),
    #[command(about = about::COMPLETIONS)]
    Completions { shell: clap_complete::Shell },
    #[command(about = about::DEMO)]
    Demo(demo::DemoArgs),
    #[command(subcommand, about = about::REGISTRY)]
    Registry(registry::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story on stdout; only problems go to the log.
    let quiet = matches!(cli.command, Command::Demo(_));
    hoard_cli::init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    hoard_cli::exit(match cli.command {
        Command::Daemon(args) => daemon::run(&args),
        Command::Client(command) => command.run(),
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
    })
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
