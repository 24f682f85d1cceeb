//! The Python tutorial's "two instances communicating": one instance exposes `square` and
//! `cube`, the other calls them. Both are meshrpc nodes here, so the first could call the
//! second back.
//!
//! ```sh
//! cargo run --example seed_square_cube
//! ```

use meshrpc::Node;

meshrpc::service! {
    pub service Powers {
        /// x * x
        fn square(x: i64) -> i64;
        /// x * x * x
        fn cube(x: i64) -> i64;
    }
}

struct PowersImpl;

impl Powers for PowersImpl {
    fn square(&self, x: i64) -> i64 {
        x * x
    }
    fn cube(&self, x: i64) -> i64 {
        x * x * x
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = Node::builder("server").start().await?;
    server.serve(PowersServer::new(PowersImpl));

    let client = Node::builder("client").start().await?;
    let powers = PowersClient::new(client.peer(server.addr()).await?);
    println!("The square of 5 is: {}", powers.square(5).await?);
    println!("The cube of 3 is: {}", powers.cube(3).await?);

    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
