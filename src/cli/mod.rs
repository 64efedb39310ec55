//! The `herald` command line. `anyhow` lives here, at the edge; errors print with their causes.
//! Exit codes: 0 success, 1 failure (including an invalid workspace config), 2 bad usage or a
//! change refused before anything changed. `herald workspace diff` exits like `diff`: 0 equal,
//! 1 different, 2 trouble.
//!
//! Conventions every command follows: `--output json` prints one JSON document ([`output`]);
//! the commands that change what Herald delivers (`workspace apply`, `workspace delete`,
//! `redrive`, `replay`) accept `--dry-run`, which prints what would change and changes nothing;
//! progress shows on stderr only when it is a terminal.

mod bench;
mod completions;
mod credentials;
pub mod dev;
mod emit;
mod healthcheck;
mod history;
pub mod output;
mod redrive;
mod replay;
mod run;
mod sandbox;
mod topics;
pub mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use self::output::Output;
use crate::settings::Settings;

/// Herald: one business event in, the right call to every tool each workspace connected.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    /// Configuration file (default: ./herald.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How commands print: text for people, json (one document; JSON lines for `history`) for
    /// scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the processor and its HTTP server (health, readiness, metrics).
    Run(KafkaArgs),
    /// Everything on one machine: embedded broker, sandbox, example workspaces, processor.
    Dev(dev::DevArgs),
    /// Serve the destination simulators alone.
    Sandbox(sandbox::SandboxArgs),
    /// Manage Herald's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Manage workspace configurations.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage the encrypted credential store.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Produce one event.
    Emit(emit::EmitArgs),
    /// Show a workspace's delivery history.
    History(history::HistoryArgs),
    /// Re-enqueue a workspace's failed and dead deliveries for an immediate attempt.
    Redrive(redrive::RedriveArgs),
    /// Replay by consumer-group offset reset to a time (dry run unless --execute).
    Replay(replay::ReplayArgs),
    /// Measure throughput, latency and cost on this machine beside its raw limits.
    Bench(bench::BenchArgs),
    /// Exit 0 when a running processor answers its health check (for containers).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print shell completions (bash, zsh, fish, powershell, elvish).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write one per command with --out-dir.
    Man(completions::ManArgs),
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create every topic Herald uses (compaction, partitions from the configuration).
    Create(KafkaArgs),
    /// Report topics whose partitions, cleanup policy or retention differ from the plan.
    Check(KafkaArgs),
}

#[derive(Debug, Subcommand)]
enum WorkspaceCommand {
    /// Validate workspace files and publish them to the workspace topic.
    Apply(workspace::ApplyArgs),
    /// List the applied workspaces: id, status here, connections and rules.
    List(workspace::show::ListArgs),
    /// Print an applied workspace's config (credentials as references, never values).
    Get(workspace::show::GetArgs),
    /// Show how files differ from what is applied (exit 0 equal, 1 different, 2 trouble).
    Diff(workspace::diff::DiffArgs),
    /// Delete an applied workspace (asks first on a terminal).
    Delete(workspace::delete::DeleteArgs),
}

/// Where Kafka is, overriding `kafka.brokers`.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers (default: `kafka.brokers` from the configuration).
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
}

impl KafkaArgs {
    fn apply(&self, settings: &mut Settings) {
        if let Some(b) = &self.brokers {
            settings.kafka.brokers = b.clone();
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = cli.output;
    // Generated from the definitions alone: no configuration, no runtime.
    match &cli.command {
        Command::Completions(args) => {
            completions::completions(Cli::command(), args);
            return ExitCode::SUCCESS;
        }
        Command::Man(args) => {
            return match completions::man(Cli::command(), args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Bench(_) = cli.command {
        // The benchmark starts processors over and over; their start-up lines would bury its
        // progress and result.
        settings.log.filter = "error".into();
    }
    crate::telemetry::init_logging(&settings.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(k) => {
            k.apply(&mut settings);
            runtime.block_on(run::run(settings))
        }
        Command::Dev(args) => dev::dev(settings, args, &runtime),
        Command::Sandbox(args) => runtime.block_on(sandbox::serve(args)),
        Command::Topics(TopicsCommand::Create(k)) => {
            k.apply(&mut settings);
            runtime.block_on(topics::create(&settings, output))
        }
        Command::Topics(TopicsCommand::Check(k)) => {
            k.apply(&mut settings);
            runtime.block_on(topics::check(&settings, output))
        }
        Command::Workspace(WorkspaceCommand::Apply(args)) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(workspace::apply(&settings, &args, output))
        }
        Command::Workspace(WorkspaceCommand::List(args)) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(workspace::show::list(&settings, output))
        }
        Command::Workspace(WorkspaceCommand::Get(args)) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(workspace::show::get(&settings, &args, output))
        }
        Command::Workspace(WorkspaceCommand::Diff(args)) => {
            args.kafka.apply(&mut settings);
            return match runtime.block_on(workspace::diff::diff(&settings, &args, output)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Workspace(WorkspaceCommand::Delete(args)) => {
            args.kafka.apply(&mut settings);
            match runtime.block_on(workspace::delete::delete(&settings, &args, output)) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(workspace::delete::NotConfirmed(why))) => {
                    eprintln!("error: {why}; nothing was changed");
                    return ExitCode::from(2);
                }
                Err(e) => Err(e),
            }
        }
        Command::Credentials(command) => {
            command.kafka().apply(&mut settings);
            runtime.block_on(credentials::run(&settings, &command, output))
        }
        Command::Emit(args) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(emit::emit(&settings, &args, output))
        }
        Command::History(args) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(history::show(&settings, &args, output))
        }
        Command::Replay(args) => {
            args.kafka.apply(&mut settings);
            match replay::run(&settings, &args, &runtime, output) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(replay::Refused(why))) => {
                    eprintln!("error: {why}; nothing was changed");
                    return ExitCode::from(2);
                }
                Err(e) => Err(e),
            }
        }
        Command::Redrive(args) => {
            args.kafka.apply(&mut settings);
            runtime.block_on(redrive::run(&settings, &args, output))
        }
        Command::Bench(args) => bench::run(settings, args, &runtime, output),
        Command::Healthcheck(args) => runtime.block_on(healthcheck::check(&settings, &args)),
        // Handled before the configuration is loaded.
        Command::Completions(_) | Command::Man(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A watch channel that turns true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}
