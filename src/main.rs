//! The `pushgate` command line: run the gateway, or check a configuration.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
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
    println!("{}: configuration is valid", path.display());
    Ok(())
}

/// Runs the gateway. Key and CA files are read once, when the providers are
/// built, and a bad one stops the start with the key's name.
fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = pushgate::config::load(path)?;
    pushgate::telemetry::init_logging(&config.log);
    let system = actix::System::new();
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
