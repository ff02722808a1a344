//! `hoard`: the daemon's clients, and the door to the rest (see the library's docs).
//!
//! The subcommands that open a cache or serve (`daemon`, `registry`, `demo`, `config`,
//! `completions`) are handed to `hoardd` before anything is parsed; they are listed here
//! only for `hoard --help`, which reads as `hoardd --help` does (a test compares them).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hoard_cli::{ClientCommand, about};

type Cli = hoard_cli::Cli<Command>;

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per process; the other variants are only names for `--help`"
)]
enum Command {
    #[command(about = about::DAEMON)]
    Daemon,
    #[command(flatten)]
    Client(ClientCommand),
    #[command(about = about::CONFIG)]
    Config,
    #[command(about = about::COMPLETIONS)]
    Completions,
    #[command(about = about::DEMO)]
    Demo,
    #[command(about = about::REGISTRY)]
    Registry,
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(command) = hoard_cli::subcommand(&args[1..])
        .filter(|command| hoard_cli::SERVER_COMMANDS.contains(command))
    {
        return hoard_cli::exit(Err(hoard_cli::hand_over(command)));
    }
    let cli = Cli::parse_from(args);
    let command = match cli.command {
        Command::Client(command) => command,
        // Found above, unless an argument before it was not UTF-8.
        Command::Daemon => return hoard_cli::exit(Err(hoard_cli::hand_over("daemon"))),
        Command::Config => return hoard_cli::exit(Err(hoard_cli::hand_over("config"))),
        Command::Completions => return hoard_cli::exit(Err(hoard_cli::hand_over("completions"))),
        Command::Demo => return hoard_cli::exit(Err(hoard_cli::hand_over("demo"))),
        Command::Registry => return hoard_cli::exit(Err(hoard_cli::hand_over("registry"))),
    };
    hoard_cli::init_logging(cli.log_format, "info");
    hoard_cli::exit(command.run())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
