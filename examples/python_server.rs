//! Rust calling the Python tutorial's `SimpleXMLRPCServer` (the `square`/`cube` one).
//!
//! ```sh
//! cargo run --example python_server                           # starts the Python tutorial's server itself
//! cargo run --example python_server -- http://localhost:8000  # or calls one already running
//! ```

use std::process::Stdio;

use meshrpc::remote::XmlRpcClient;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Python tutorial's server, verbatim but for the port (from the command line) and a readiness line.
const SEED_SERVER: &str = include_str!("seed_server.py");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut server = None;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut child = tokio::process::Command::new("python3")
                .args(["-c", SEED_SERVER, &port.to_string()])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
            BufReader::new(stdout).lines().next_line().await?;
            server = Some(child);
            format!("http://127.0.0.1:{port}")
        }
    };
    let python = XmlRpcClient::new(&url)?;
    let result: i64 = python.call("square", 5).await?;
    println!("The square of 5 is: {result}");
    let result: i64 = python.call("cube", 3).await?;
    println!("The cube of 3 is: {result}");
    if let Some(mut child) = server {
        child.kill().await?;
    }
    Ok(())
}
