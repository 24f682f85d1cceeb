//! Two in-process nodes calling each other over ONE connection: `alpha` dials `beta`, and
//! `beta` calls `alpha` back by name over the link `alpha` opened. Each also forwards work to
//! the other from inside a handler.
//!
//! ```sh
//! cargo run --example two_nodes
//! ```

use meshrpc::{Node, RequestContext};

async fn start(name: &'static str) -> anyhow::Result<Node> {
    let node = Node::builder(name).start().await?;
    node.register("hello", move |who: String| {
        format!("{name} says hello to {who}")
    });
    // `relay(msg)` asks the other node to say hello: a call made from inside a handler,
    // through the node its request context hands it.
    node.register(
        "relay",
        |cx: RequestContext, (peer, who): (String, String)| async move {
            cx.node()?.call::<String>(peer.as_str(), "hello", who).await
        },
    );
    Ok(node)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let alpha = start("alpha").await?;
    let beta = start("beta").await?;

    let reply: String = alpha.call(beta.addr(), "hello", "alpha").await?;
    println!("alpha -> beta: {reply}");
    let reply: String = beta.call("alpha", "hello", "beta").await?;
    println!("beta -> alpha (by name, on alpha's link): {reply}");
    let reply: String = alpha.call("beta", "relay", ("alpha", "the world")).await?;
    println!("alpha -> beta -> alpha: {reply}");

    let on_alpha = alpha.peers();
    let on_beta = beta.peers();
    println!(
        "links: alpha has {}, beta has {}",
        on_alpha.len(),
        on_beta.len()
    );
    println!(
        "alpha sees beta at {} (beta's listen address: alpha dialed)",
        on_alpha[0].remote
    );
    println!(
        "beta sees alpha at {} (an ephemeral port: the same TCP connection)",
        on_beta[0].remote
    );

    alpha.shutdown().await;
    beta.shutdown().await;
    Ok(())
}
