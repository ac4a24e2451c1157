//! The `pushgate` command line: run the gateway, or check a configuration.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod allocator;

/// pushgate: XEP-0357 push notifications for XMPP servers, delivered to APNs and FCM.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML); PUSHGATE_… environment variables override it.
    #[arg(
        long,
        short,
        global = true,
        default_value = "pushgate.toml",
        env = "PUSHGATE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration, including key and CA files, and exit.
    CheckConfig,
    /// Move registrations between stores (run with the gateway stopped).
    #[command(subcommand)]
    Store(StoreCommand),
    /// GET an http:// URL and exit 0 on a 2xx answer: a health check for
    /// images without a shell, e.g. `pushgate probe http://127.0.0.1:8080/readyz`.
    Probe {
        /// The URL (http only).
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Write every registration and pending notification of the configured
    /// store as JSON lines. The output holds the deployment key: keep it secret.
    Export {
        /// Output file (created with mode 0600); standard output if absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read an export into the configured store, which must be empty or have
    /// the export's deployment key.
    Import {
        /// Input file; standard input if absent.
        #[arg(long, short)]
        input: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    #[cfg(not(target_os = "linux"))]
    allocator::tune_in_main();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Store(command) => store_command(&cli.config, command),
        Command::Probe { url, timeout_ms } => {
            pushgate::probe::probe(&url, std::time::Duration::from_millis(timeout_ms))
                .map(|status| println!("{url}: {status}"))
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = pushgate::config::load(path)?;
    let issues = pushgate::gateway::check(&config);
    if !issues.is_empty() {
        return Err(pushgate::config::ConfigError::Invalid(issues).into());
    }
    for exposed in pushgate::config::files::exposed(&config) {
        eprintln!("warning: {exposed}");
    }
    for (provider, expires) in pushgate::providers::certificate_expiries(&config.providers) {
        println!("providers[{provider}]: the client certificate expires on {expires}");
    }
    println!("{}: configuration is valid", path.display());
    Ok(())
}

/// Export or import, on the store the configuration names.
fn store_command(path: &std::path::Path, command: StoreCommand) -> anyhow::Result<()> {
    use std::io::Write as _;
    let config = pushgate::config::load(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let registry = pushgate::registry::Registry::open(&config.store)?;
        registry
            .connect()
            .await
            .with_context(|| format!("cannot reach the {} store", registry.label()))?;
        match command {
            StoreCommand::Export { output } => {
                let summary = match output {
                    Some(file) => {
                        let mut out = std::io::BufWriter::new(create_private(&file)?);
                        registry.export(&mut out).await?
                    }
                    None => {
                        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                        let summary = registry.export(&mut out).await?;
                        out.flush()?;
                        summary
                    }
                };
                eprintln!(
                    "exported {} registrations and {} pending notifications from the {} store",
                    summary.registrations,
                    summary.outbox,
                    registry.label()
                );
            }
            StoreCommand::Import { input } => {
                let summary = match input {
                    Some(file) => {
                        let f = std::fs::File::open(&file)
                            .with_context(|| format!("cannot open {}", file.display()))?;
                        registry.import(std::io::BufReader::new(f)).await?
                    }
                    None => registry.import(std::io::stdin().lock()).await?,
                };
                eprintln!(
                    "imported {} registrations and {} pending notifications into the {} store",
                    summary.registrations,
                    summary.outbox,
                    registry.label()
                );
            }
        }
        Ok(())
    })
}

/// Creates `path` readable by its owner only: an export holds the deployment key.
fn create_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Runs the gateway. Key and CA files are read once, when the providers are
/// built, and a bad one stops the start with the key's name.
fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = pushgate::config::load(path)?;
    let mut log = config.log.clone();
    if let Some(format) = config.telemetry.log_format {
        log.format = format;
    }
    pushgate::telemetry::init_logging(&log);
    let runtime = pushgate::gateway::runtime().context("building the runtime")?;
    let system = actix::System::with_tokio_rt(move || runtime);
    system
        .block_on(pushgate::gateway::run(config, shutdown_signal()))
        .context("gateway")
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
