//! The seed's "two instances communicating": one instance exposes `square` and `cube`, the
//! other calls them. Both are meshrpc nodes here, so the first could call the second back.
//!
//! ```sh
//! cargo run --example seed_square_cube
//! ```

use meshrpc::{Method, Node};

const SQUARE: Method<i64, i64> = Method::new("square");
const CUBE: Method<i64, i64> = Method::new("cube");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = Node::builder("server").start().await?;
    server.serve_fn(SQUARE, |x| x * x);
    server.serve_fn(CUBE, |x| x * x * x);

    let client = Node::builder("client").start().await?;
    let result = client.invoke(server.addr(), SQUARE, 5).await?;
    println!("The square of 5 is: {result}");
    let result = client.invoke(server.addr(), CUBE, 3).await?;
    println!("The cube of 3 is: {result}");

    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
