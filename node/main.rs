//! The `meshrpc` binary: run a node, call one, list its members, or watch a local demo.
//! Signals are read here and only here: SIGINT/SIGTERM become `Node::shutdown`.

mod args;
mod bench;
mod certs;
mod commands;
mod cpu;
mod demo;
mod load;
mod plot;
mod services;

use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The tokio runtime: `threads` workers (0: one per CPU); one means a single-threaded
/// runtime, the cheapest way to idle when many nodes share a machine.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Handler panics are caught and answered as `panicked` errors; log them as one line
    // instead of the default hook's backtrace.
    std::panic::set_hook(Box::new(|info| tracing::error!(%info, "panic")));
    let threads = match &cli.command {
        Command::Node(args) => args.threads,
        _ => 0,
    };
    let runtime = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => commands::node(args).await,
            Command::Call(args) => commands::call(args).await,
            Command::Members(args) => commands::members(args).await,
            Command::Actors(args) => commands::actors(args).await,
            Command::Reminders(args) => commands::reminders(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchPlot(args) => bench::plot(args),
            Command::TlsGen(args) => commands::tls_gen(args),
            Command::Demo(args) => demo::run(Duration::from_millis(args.load_ms))
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
