//! The Python tutorial's first example, in Rust: a server that exposes `add`, and a client
//! that calls `add(2, 3)` and prints 5.
//!
//! ```sh
//! cargo run --example seed_add                      # both in one process, then exit
//! cargo run --example seed_add -- server 127.0.0.1:8000   # the server alone, until Ctrl-C
//! cargo run --example seed_add -- client 127.0.0.1:8000   # the client alone
//! ```

use meshrpc::{Client, Node};

meshrpc::service! {
    /// Shared by server and client: a type mistake on either side is a compile error, and a
    /// client built from another definition is told both signatures.
    pub service Calc {
        /// a + b
        fn add(a: i64, b: i64) -> i64;
    }
}

struct CalcImpl;

impl Calc for CalcImpl {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

async fn server(listen: &str) -> anyhow::Result<Node> {
    let node = Node::builder("server").listen(listen).start().await?;
    node.serve(CalcServer::new(CalcImpl));
    Ok(node)
}

async fn client(addr: &str) -> anyhow::Result<()> {
    let server = Client::connect(addr).await?;
    let result = CalcClient::new(&server).add(2, 3).await?;
    println!("{result}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", listen] => {
            let node = server(listen).await?;
            println!("serving add on {}", node.addr());
            tokio::signal::ctrl_c().await?;
            node.shutdown().await;
        }
        ["client", addr] => client(addr).await?,
        [] => {
            let node = server("127.0.0.1:0").await?;
            client(&node.addr().to_string()).await?;
            node.shutdown().await;
        }
        _ => anyhow::bail!("usage: seed_add [server LISTEN | client ADDR]"),
    }
    Ok(())
}
