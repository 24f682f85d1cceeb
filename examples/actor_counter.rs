//! A stateful service: an actor owns its state and runs one call at a time, so 1000
//! concurrent increments from another node add up exactly, with no lock in sight. A method
//! that panics is answered with an error and the actor restarts from its factory.
//!
//! ```sh
//! cargo run --example actor_counter
//! ```

use meshrpc::{ErrorKind, Node};

#[derive(Default)]
struct Counter {
    value: i64,
    calls: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The panic below is caught and answered; print it as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("(a handler panicked: {info})")));
    let server = Node::builder("server").start().await?;
    server
        .actor("counter", Counter::default)
        .method("incr", |c: &mut Counter, by: i64| {
            c.calls += 1;
            c.value += by;
            c.value
        })
        .help("counter.incr(by) -> the new value")
        .method("get", |c: &mut Counter, (): ()| (c.value, c.calls))
        .method("reset_to", |c: &mut Counter, to: i64| {
            if to < 0 {
                return Err(format!("cannot reset to {to}: counters are not negative"));
            }
            c.value = to;
            Ok(to)
        })
        .method("explode", |_: &mut Counter, (): ()| -> i64 {
            panic!("the counter exploded")
        })
        .start();

    let caller = Node::builder("caller").start().await?;
    let peer = caller.peer(server.addr()).await?;
    let incrs = (0..1000).map(|_| peer.call::<i64>("counter.incr", 1i64));
    for result in futures_util::future::join_all(incrs).await {
        result?;
    }
    let (value, calls): (i64, u64) = peer.call("counter.get", ()).await?;
    println!("after 1000 concurrent incr(1): value {value}, calls {calls}");

    let err = peer
        .call::<i64>("counter.reset_to", -1i64)
        .await
        .unwrap_err();
    println!("reset_to(-1): {err}");
    let err = peer.call::<i64>("counter.explode", ()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    println!("explode(): {err}");
    let (value, _): (i64, u64) = peer.call("counter.get", ()).await?;
    println!("after the panic the actor restarted from its factory: value {value}");

    caller.shutdown().await;
    server.shutdown().await;
    Ok(())
}
