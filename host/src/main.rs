//! The `sluice` command: run the gateway or validate a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::gateway::{self, Source};

/// Sluice, an API gateway whose policies are WebAssembly components.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file. Default: ./gateway.toml, or the embedded default when that
        /// file does not exist.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit non-zero with located messages if it is invalid.
    Validate {
        /// Configuration file. Default: ./gateway.toml.
        file: Option<PathBuf>,
    },
}

const DEFAULT_FILE: &str = "gateway.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => {
            let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let checked = rt.block_on(async {
                let loaded = gateway::load_config(&Source::File(path.clone()))?;
                let env = gateway::policy_env(&loaded, gateway::Purpose::Check)?;
                gateway::build(&loaded, env).await
            });
            match checked {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            let source = match config {
                Some(p) => Source::File(p),
                None if PathBuf::from(DEFAULT_FILE).exists() => {
                    Source::File(PathBuf::from(DEFAULT_FILE))
                }
                None => Source::Embedded,
            };
            let loaded = match gateway::load_config(&source) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            sluice::telemetry::init_logging(&loaded.config.gateway.log_level);
            let workers = match loaded.config.gateway.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("sluice-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let started = rt.block_on(async {
                let env = gateway::policy_env(&loaded, gateway::Purpose::Serve)?;
                let snap = gateway::build(&loaded, env).await?;
                gateway::run(source, snap).await
            });
            match started {
                Ok(()) => ExitCode::SUCCESS,
                Err(gateway::StartError::Config(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
