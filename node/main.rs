//! The `meshrpc` binary: run a node, call one, or watch a local demo cluster.
//! Signals are read here and only here: SIGINT/SIGTERM become `Node::shutdown`.

mod demo;
mod services;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshrpc::{CallOptions, Client, Node, NodeConfig};
use tracing_subscriber::EnvFilter;

/// meshrpc: symmetric RPC between peer nodes over framed TCP.
#[derive(Parser)]
#[command(name = "meshrpc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node serving the demo services (add, square, cube, echo, sleep, fail, crash,
    /// counter.*, fanout, system.*) until SIGINT or SIGTERM.
    Node(NodeArgs),
    /// Call METHOD on the node at ADDR and print the JSON result.
    Call(CallArgs),
    /// Start a local cluster of real node processes, show them calling each other, and exit.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// This node's name, unique in the cluster.
    #[arg(long)]
    name: String,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address to tell peers to dial, when it differs from the listen address.
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A peer to connect to (HOST:PORT); repeatable. Retried with backoff until reached.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_frame: usize,
    /// Deadline of calls this node makes (fanout), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct CallArgs {
    /// The node's address (HOST:PORT).
    addr: String,
    /// The method to call, e.g. `add` or `counter.incr`.
    method: String,
    /// Arguments, each a JSON value: `meshrpc call 127.0.0.1:4000 add 2 -3`. Everything
    /// after METHOD is an argument, so options go before ADDR.
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// How long the closing load run lasts, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    load_ms: u64,
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => run_node(args).await,
            Command::Call(args) => return call(args).await,
            Command::Demo(args) => demo::run(Duration::from_millis(args.load_ms)).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig {
        name: args.name,
        listen: args.listen,
        advertise: args.advertise,
        seeds: args.seeds,
        max_frame: args.max_frame,
        default_timeout: Duration::from_millis(args.timeout_ms),
        ..NodeConfig::default()
    };
    let node = Node::start(config).await?;
    services::register(&node);
    // The one line scripts and tests wait for.
    println!("listening on {}", node.addr());
    use std::io::Write;
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    wait_for_signal().await?;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// `meshrpc call`: exit 0 with the JSON result on stdout, or 1 with `error: <kind>: <message>`.
async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let mut values = Vec::with_capacity(args.args.len());
    for (i, arg) in args.args.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(arg).with_context(|| {
            format!(
                "argument {} is not JSON: {arg} (quote strings: '\"text\"')",
                i + 1
            )
        })?;
        values.push(value);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let config = NodeConfig {
        name: "meshrpc-call".to_owned(),
        connect_timeout: timeout,
        ..NodeConfig::default()
    };
    let outcome = match Client::connect_with(&args.addr, &config).await {
        Ok(client) => {
            let result = client
                .call_json(
                    &args.method,
                    &serde_json::Value::Array(values),
                    CallOptions::timeout(timeout),
                )
                .await;
            client.close().await;
            result
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(value) => {
            println!("{value}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", e.kind());
            Ok(ExitCode::FAILURE)
        }
    }
}
