//! The `sluice` command: run the gateway, validate a configuration, back up the store, and
//! manage a running gateway through its admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::gateway::{self, Source};

/// mimalloc: the request path allocates small, short-lived objects on every request (header
/// maps, futures, buffers); glibc malloc spent 11–12 % of the proxy's CPU on them. Built
/// without transparent huge pages (`no_thp`): with them an idle gateway held 9 MB more.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice, an API gateway whose policies are WebAssembly components.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// The admin API of the gateway to manage.
    #[arg(
        long,
        global = true,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:9901"
    )]
    admin: String,
    /// Admin bearer token.
    #[arg(
        long,
        global = true,
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// PEM CA bundle for an https admin URL.
    #[arg(long, global = true, env = "SLUICE_ADMIN_CA")]
    ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    /// Copy the store consistently (works while the gateway runs).
    Backup {
        /// The store. Default: data/sluice.redb.
        #[arg(long, default_value = "data/sluice.redb")]
        state: PathBuf,
        /// The new file.
        #[arg(long)]
        to: PathBuf,
    },
    /// Show the gateway's version, configuration revision, live plugins and Redis health.
    Status,
    /// Apply the routes, upstreams, consumers and plugin settings of a TOML file; prints
    /// what changed.
    Apply {
        /// The file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Print the API-managed configuration as TOML.
    Export,
    /// Manage plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Manage API-managed routes.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Manage consumers.
    #[command(subcommand)]
    Consumer(ConsumerCmd),
    /// Manage admin tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Create a Rust policy crate on the SDK (it builds and passes its own test at once).
    New {
        /// Policy name (lowercase letters, digits, '-').
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK (`sdk/` of a Sluice checkout).
        #[arg(long, default_value_os_t = sluice::scaffold::default_sdk())]
        sdk: PathBuf,
    },
    /// Upload a component as the plugin's next version and make it live.
    Push {
        /// Plugin name.
        name: String,
        /// The `.wasm` component.
        file: PathBuf,
        /// Capabilities to grant a new plugin (comma-separated).
        #[arg(long, value_delimiter = ',')]
        grants: Vec<String>,
        /// Base64 Ed25519 signature over the component's SHA-256 digest.
        #[arg(long)]
        signature: Option<String>,
    },
    /// List plugins.
    List,
    /// Remove an uploaded plugin.
    Rm {
        /// Plugin name.
        name: String,
    },
    /// Make an earlier version live again.
    Rollback {
        /// Plugin name.
        name: String,
        /// The version (default: the one before the live one).
        #[arg(long)]
        to: Option<u32>,
    },
}

#[derive(Subcommand)]
enum RouteCmd {
    /// List routes.
    List,
    /// Print a route as TOML.
    Get {
        /// Route name.
        name: String,
    },
    /// Remove a route.
    Rm {
        /// Route name.
        name: String,
    },
}

#[derive(Subcommand)]
enum ConsumerCmd {
    /// Create or update a consumer.
    Add {
        /// Consumer name.
        name: String,
        /// Labels.
        #[arg(long)]
        tag: Vec<String>,
        /// Also create an API key (printed once).
        #[arg(long)]
        key: bool,
    },
    /// List consumers.
    List,
    /// Remove a consumer.
    Rm {
        /// Consumer name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token (its secret is printed once).
    Create {
        /// Token name.
        name: String,
        /// `admin` or `read-only`.
        #[arg(long, default_value = "read-only")]
        role: String,
    },
    /// List tokens.
    List,
    /// Remove a token.
    Rm {
        /// Token name.
        name: String,
    },
}

/// A single-threaded runtime for the short-lived commands (reports its own failure).
fn small_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("cannot start the runtime: {e}"))
        .ok()
}

/// Runs a client command against the admin API.
fn client(cli: &Cli) -> ExitCode {
    use sluice::cli;
    let t = cli::Target {
        url: cli.admin.clone(),
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        json: cli.json,
    };
    let Some(rt) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Status => cli::status(&t).await,
            Command::Apply { file } => cli::apply(&t, file).await,
            Command::Export => cli::export(&t).await,
            Command::Plugin(PluginCmd::Push {
                name,
                file,
                grants,
                signature,
            }) => cli::plugin_push(&t, name, file, grants, signature.clone()).await,
            Command::Plugin(PluginCmd::List) => cli::plugin_list(&t).await,
            Command::Plugin(PluginCmd::Rm { name }) => {
                cli::remove(
                    &t,
                    &format!("/v1/plugins/{name}"),
                    &format!("plugin {name}"),
                )
                .await
            }
            Command::Plugin(PluginCmd::Rollback { name, to }) => {
                cli::plugin_rollback(&t, name, *to).await
            }
            Command::Route(RouteCmd::List) => cli::route_list(&t).await,
            Command::Route(RouteCmd::Get { name }) => cli::route_get(&t, name).await,
            Command::Route(RouteCmd::Rm { name }) => {
                cli::remove(&t, &format!("/v1/routes/{name}"), &format!("route {name}")).await
            }
            Command::Consumer(ConsumerCmd::Add { name, tag, key }) => {
                cli::consumer_add(&t, name, tag, *key).await
            }
            Command::Consumer(ConsumerCmd::List) => cli::consumer_list(&t).await,
            Command::Consumer(ConsumerCmd::Rm { name }) => {
                cli::remove(
                    &t,
                    &format!("/v1/consumers/{name}"),
                    &format!("consumer {name}"),
                )
                .await
            }
            Command::Token(TokenCmd::Create { name, role }) => {
                cli::token_create(&t, name, role).await
            }
            Command::Token(TokenCmd::List) => cli::token_list(&t).await,
            Command::Token(TokenCmd::Rm { name }) => {
                cli::remove(&t, &format!("/v1/tokens/{name}"), &format!("token {name}")).await
            }
            Command::Run { .. }
            | Command::Validate { .. }
            | Command::Backup { .. }
            | Command::Plugin(PluginCmd::New { .. }) => {
                unreachable!("handled in main")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

const DEFAULT_FILE: &str = "gateway.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugin(PluginCmd::New { name, dir, sdk }) => {
            match sluice::scaffold::new_policy(&name, &dir, &sdk) {
                Ok(root) => {
                    println!("created {} (cd there and run `cargo test`)", root.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Backup { state, to } => match sluice::state::backup_file(&state, &to) {
            Ok(()) => {
                println!("{} copied to {}", state.display(), to.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Validate { file } => {
            let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
            let Some(rt) = small_runtime() else {
                return ExitCode::FAILURE;
            };
            let checked = rt.block_on(async {
                let loaded = gateway::load_config(&Source::File(path.clone()))?;
                let env = gateway::policy_env(&loaded, gateway::Purpose::Check)?;
                gateway::validate(&loaded, env).await
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
            // The settings that size the runtime are checked before it starts.
            let out_of_range = sluice::snapshot::bounds::check(&loaded.config);
            if !out_of_range.is_empty() {
                eprintln!("{}", loaded.error(out_of_range));
                return ExitCode::from(2);
            }
            sluice::telemetry::init_logging(&loaded.config.gateway.log_level);
            let workers = match loaded.config.gateway.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            let from = match &source {
                Source::File(p) => p.display().to_string(),
                Source::Embedded => "<embedded gateway.toml>".to_string(),
            };
            tracing::info!(config = %from, workers, "configuration loaded");
            // Every client connection takes a descriptor (and a proxied one shares the
            // upstream pool's); below this the connection cap cannot be reached.
            let wanted = loaded.config.limits.max_connections as u64 + 1024;
            match sluice::server::raise_open_files_limit() {
                Ok((soft, _)) if soft < wanted => tracing::warn!(
                    open_files = soft,
                    max_connections = loaded.config.limits.max_connections,
                    "the open-files limit is below what max_connections needs (raise the hard limit: ulimit -Hn)"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
            }
            // One worker runs on a single-threaded runtime (like an nginx worker: no work
            // stealing, no cross-thread wake-ups); more use the work-stealing scheduler.
            let built = if workers == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("sluice-worker")
                    .enable_all()
                    .build()
            };
            let rt = match built {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let started = rt.block_on(async {
                let signals = gateway::Signals::install()?;
                let env = gateway::policy_env(&loaded, gateway::Purpose::Serve)?;
                let snap = gateway::build(&loaded, env).await?;
                gateway::run(source, loaded, snap, signals).await
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
        _ => client(&cli),
    }
}
