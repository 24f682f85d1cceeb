//! `meshrpc demo`: starts three real `meshrpc node` processes on free loopback ports, shows
//! them calling each other in both directions, runs a short load, kills one with SIGKILL and
//! shows a persistent virtual actor's count go on, stops the others with SIGTERM and prints
//! a summary. Every child is killed if the demo fails part-way.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commands::MemberSummary;
use anyhow::{bail, ensure, Context};
use futures_util::StreamExt;
use meshrpc::{CallOptions, Client, ErrorKind, MemberStatus, RpcError};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::services::{CalcClient, StreamsClient};

/// How long a node may take to start or the mesh to form.
const READY_WITHIN: Duration = Duration::from_secs(15);

struct NodeProcess {
    name: String,
    addr: String,
    child: Child,
}

impl NodeProcess {
    async fn spawn(name: &str, seeds: &[&NodeProcess], state: &str) -> anyhow::Result<NodeProcess> {
        let exe = std::env::current_exe().context("cannot find the meshrpc executable")?;
        let mut command = Command::new(exe);
        command.args([
            "node",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--state",
            state,
        ]);
        for seed in seeds {
            command.args(["--seed", &seed.addr]);
        }
        // Quiet by default: the demo checks every step itself, and `crash()` would log a panic.
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "off".to_owned());
        let mut child = command
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(READY_WITHIN, lines.next_line())
            .await
            .with_context(|| format!("node {name} did not start within {READY_WITHIN:?}"))??
            .with_context(|| format!("node {name} exited before listening"))?;
        let addr = line
            .strip_prefix("listening on ")
            .with_context(|| format!("node {name} printed `{line}`"))?
            .to_owned();
        Ok(NodeProcess {
            name: name.to_owned(),
            addr,
            child,
        })
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("node already exited")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .with_context(|| format!("{} did not stop within 10 s of SIGTERM", self.name))??;
        ensure!(exit.success(), "{} exited with {exit}", self.name);
        Ok(())
    }
}

pub async fn run(load: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("== starting three nodes on loopback (real processes) ==");
    // One SQLite file, shared by the three, for the virtual counter's state.
    let folder = std::env::temp_dir().join(format!("meshrpc-demo-{}", std::process::id()));
    std::fs::create_dir_all(&folder).context("cannot make the demo's state folder")?;
    let _remove = RemoveOnDrop(folder.clone());
    let state = format!("sqlite:{}", folder.join("state.db").display());
    let n1 = NodeProcess::spawn("n1", &[], &state).await?;
    let n2 = NodeProcess::spawn("n2", &[&n1], &state).await?;
    let n3 = NodeProcess::spawn("n3", &[&n1, &n2], &state).await?;
    println!("  virtual actors that persist keep their state in {state}");
    for node in [&n1, &n2, &n3] {
        println!("  {} listening on {}", node.name, node.addr);
    }
    let c1 = Client::connect(&n1.addr).await?;
    let c2 = Client::connect(&n2.addr).await?;
    let c3 = Client::connect(&n3.addr).await?;
    for (node, client) in [(&n1, &c1), (&n2, &c2), (&n3, &c3)] {
        wait_for_members(client, 3)
            .await
            .with_context(|| format!("{} never saw all three members up", node.name))?;
    }
    println!("  cluster formed: every node sees the three members up (links open on first call)");

    println!("\n== the Python tutorial's examples, from a typed client ==");
    let (calc1, calc2) = (CalcClient::new(&c1), CalcClient::new(&c2));
    let sum = calc1.add(2, 3).await?;
    println!("  n1: add(2, 3) = {sum}");
    let (square, cube) = (calc2.square(5).await?, calc2.cube(3).await?);
    println!("  n2: The square of 5 is: {square}");
    println!("  n2: The cube of 3 is: {cube}");
    ensure!(sum == 5 && square == 25 && cube == 27, "wrong arithmetic");

    println!("\n== nodes calling each other (fanout runs on a node and calls every member) ==");
    let from_n1 = fanout(&c1, "system.whoami", json!([])).await?;
    println!("  n1 -> peers: system.whoami() = {from_n1}");
    let from_n3 = fanout(&c3, "add", json!([20, 22])).await?;
    println!("  n3 -> peers: add(20, 22) = {from_n3}");
    ensure!(
        from_n3 == json!({"n1": 42, "n2": 42}),
        "fanout from n3 returned {from_n3}"
    );

    println!(
        "\n== a stateful actor: 300 concurrent counter.incr(1) on n2, one at a time inside =="
    );
    let incrs = (0..300).map(|_| c2.peer().call::<i64>("counter.incr", 1i64));
    for result in futures_util::future::join_all(incrs).await {
        result?;
    }
    let count: i64 = c2.peer().call("counter.get", ()).await?;
    println!("  counter.get() = {count}");
    ensure!(count == 300, "counter is {count}, expected 300");

    println!(
        "\n== a virtual actor: vcounter/user-42 lives on one node, called through n1 and n3 =="
    );
    let owner = agreed_owner(&[&c1, &c2, &c3], "user-42").await?;
    async fn hundred(c: &Client) -> Result<(), RpcError> {
        for _ in 0..100 {
            c.peer().call::<i64>("vcounter.incr/user-42", 1i64).await?;
        }
        Ok(())
    }
    let (a, b) = futures_util::future::join(hundred(&c1), hundred(&c3)).await;
    a?;
    b?;
    let total: i64 = c2.peer().call("vcounter.get/user-42", ()).await?;
    println!("  owner (every node agrees): {owner}; 100 incr through n1 + 100 through n3; get through n2 = {total}");
    ensure!(total == 200, "vcounter/user-42 is {total}, expected 200");

    println!("\n== streams: count(5) from n2, sum of 1..=100 uploaded to n3 ==");
    let (streams2, streams3) = (StreamsClient::new(&c2), StreamsClient::new(&c3));
    let counted: Vec<u64> = streams2
        .count(5)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let (sink, reply) = streams3.sum()?;
    for x in 1..=100i64 {
        sink.send(&x).await?;
    }
    sink.finish();
    let sum = reply.await?;
    println!("  count(5) streamed {counted:?}; sum of 100 streamed items = {sum}");
    ensure!(
        counted == [0, 1, 2, 3, 4] && sum == 5050,
        "the streams went wrong"
    );

    println!("\n== failures are errors, not crashes ==");
    show(
        c1.peer().call::<Value>("nope", ()).await,
        ErrorKind::MethodNotFound,
    )?;
    show(
        c1.peer().call::<i64>("add", ("two", 3)).await,
        ErrorKind::BadArguments,
    )?;
    show(
        c1.peer().call::<()>("fail", "disk full").await,
        ErrorKind::Application,
    )?;
    show(c1.peer().call::<()>("crash", ()).await, ErrorKind::Panicked)?;
    let short = CallOptions::timeout(Duration::from_millis(200));
    show(
        c1.peer().call_with::<u64>("sleep", 5_000u64, short).await,
        ErrorKind::Timeout,
    )?;
    println!("  n1 still serves: add(1, 1) = {}", calc1.add(1, 1).await?);

    println!("\n== load: add(2, 3) from one client, 64 calls in flight, {load:?} ==");
    let (calls, secs) = load_run(&c1, load).await?;
    println!(
        "  {calls} calls in {secs:.2} s = {:.0} calls/s",
        calls as f64 / secs
    );

    for client in [c1, c2, c3] {
        client.close().await;
    }

    println!("\n== kill -9 of vcounter/user-42's owner ({owner}): its count goes on from the state store ==");
    let (mut victims, survivors): (Vec<_>, Vec<_>) =
        [n1, n2, n3].into_iter().partition(|n| n.name == owner);
    for victim in &mut victims {
        victim.child.start_kill()?;
        victim.child.wait().await?;
    }
    let via = survivors.first().context("no node survived")?;
    let client = Client::connect(&via.addr).await?;
    let killed_at = Instant::now();
    // The call waits, within its deadline, for the cluster to find the owner down.
    let patient = CallOptions::timeout(Duration::from_secs(30));
    let after: i64 = (client.peer())
        .call_with("vcounter.incr/user-42", 1i64, patient)
        .await?;
    let new_owner: Option<String> = (client.peer())
        .call("system.actors.owner", ("vcounter", "user-42"))
        .await?;
    client.close().await;
    println!(
        "  incr through {} = {after}, {:.1} s after the kill, served by {} from the stored 200",
        via.name,
        killed_at.elapsed().as_secs_f64(),
        new_owner.as_deref().unwrap_or("?")
    );
    ensure!(
        after == 201,
        "vcounter/user-42 went on from {}, not 200",
        after - 1
    );

    println!("\n== stopping the other nodes with SIGTERM ==");
    for node in survivors {
        let name = node.name.clone();
        node.stop().await?;
        println!("  {name} stopped cleanly");
    }
    println!("\ndemo ok: 3 nodes, calls both ways, actor state, a virtual actor that outlived its node's kill -9, 5 of the error kinds, {calls} load calls, {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The owner of vcounter/`key` once every node names the same one (bounded wait).
async fn agreed_owner(clients: &[&Client], key: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut owners = std::collections::BTreeSet::new();
        for c in clients {
            let owner: Option<String> = c
                .peer()
                .call("system.actors.owner", ("vcounter", key))
                .await?;
            owners.insert(owner);
        }
        if let (1, Some(Some(owner))) = (owners.len(), owners.first()) {
            return Ok(owner.clone());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes never agreed where vcounter/{key} lives: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_members(client: &Client, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let members: Vec<MemberSummary> = client.peer().call("system.members", ()).await?;
        let up = members
            .iter()
            .filter(|m| m.status == MemberStatus::Up)
            .count();
        if up >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("saw {up} of {want} members up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fanout(client: &Client, method: &str, args: Value) -> Result<Value, RpcError> {
    client
        .peer()
        .call_json("fanout", &json!([method, args]), CallOptions::default())
        .await
}

fn show<T: std::fmt::Debug>(result: Result<T, RpcError>, want: ErrorKind) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == want => {
            println!("  {want}: {e}");
            Ok(())
        }
        other => bail!("expected a {want} error, got {other:?}"),
    }
}

async fn load_run(client: &Client, duration: Duration) -> anyhow::Result<(u64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let calc = CalcClient::new(client);
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    calc.add(2, 3).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), RpcError>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok((done.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
}

/// Removes the demo's state folder however the demo ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
