//! `meshrpc node`, `meshrpc call` and `meshrpc members`: turn arguments into a node or a
//! client, and results into output and exit codes.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meshrpc::actor::Activation;
use meshrpc::{CallOptions, Client, MemberStatus, MulticastConfig, Node, NodeConfig, RpcError};
use serde_json::value::RawValue;

use crate::args::{ClientArgs, Discover, MembersArgs, NodeArgs};

pub async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let multicast = args.discover.map(|Discover::Multicast| MulticastConfig {
        group: args.multicast_group,
        interface: args.multicast_if,
        cluster: args.cluster.clone(),
        ..MulticastConfig::default()
    });
    let advertise = match &args.advertise {
        Some(name) => Some(resolve_one(name).await?),
        None => None,
    };
    let config = NodeConfig {
        name: args.name,
        listen: args.listen,
        advertise,
        seeds: args.seeds,
        max_frame: args.max_frame,
        default_timeout: Duration::from_millis(args.timeout_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        down_after: Duration::from_millis(args.down_after_ms),
        link_idle: Duration::from_millis(args.link_idle_ms),
        cookie: args.cookie,
        client_secret: args.client_secret,
        multicast,
        http: args.http,
        http_max_body: args.http_max_body,
        http_token: args.http_token,
        http_open: args.http_open,
        http_tls: args.http_tls,
        http_methods: args.http_methods,
        http_header_timeout: Duration::from_millis(args.http_header_timeout_ms),
        http_max_connections: args.http_max_connections,
        max_handshakes: args.max_handshakes,
        max_connections: args.max_connections,
        frame_budget: args.frame_budget_mb << 20,
        max_protocol: args.max_protocol,
        max_call: Duration::from_millis(args.max_call_ms),
        max_activations: args.max_activations,
        state: args.state.clone(),
        tls: args.tls.config(),
        ..NodeConfig::default()
    };
    raise_descriptor_limit(
        config.http_max_connections + config.max_handshakes + config.max_connections,
    );
    if config.http.is_some() {
        // The library emits to the `metrics` facade only; the binary installs the exporter
        // behind `/metrics`.
        if let Err(error) = meshrpc::install_prometheus() {
            tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics will say so");
        }
    }
    let node = Node::start(config).await?;
    crate::services::register(&node).await?;
    // The one line scripts and tests wait for.
    println!("listening on {}", node.listen_addr());
    if let Some(http) = node.http_addr() {
        println!("http on {http}");
    }
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    // `joined` fails only when the cluster refuses this node (its name is taken).
    let refused = async {
        match node.joined().await {
            Err(RpcError::Refused { reason, .. }) => reason,
            Err(other) => other.to_string(),
            Ok(()) => std::future::pending().await,
        }
    };
    tokio::select! {
        signal = wait_for_signal() => signal?,
        reason = refused => {
            node.shutdown().await;
            anyhow::bail!("{reason}");
        }
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// One line of `system.members` (and of `meshrpc members --json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MemberSummary {
    pub name: String,
    pub addr: String,
    pub status: MemberStatus,
    pub id: String,
}

/// The first address `host:port` resolves to.
async fn resolve_one(host_port: &str) -> anyhow::Result<std::net::SocketAddr> {
    let mut addrs = tokio::net::lookup_host(host_port)
        .await
        .with_context(|| format!("cannot resolve --advertise {host_port}"))?;
    addrs
        .next()
        .with_context(|| format!("--advertise {host_port} resolves to no address"))
}

/// A node holds a descriptor per link, per connection in its handshake and per HTTP
/// connection: raise the soft limit towards the hard one so the configured caps, not the
/// default 1024, are what bounds them.
fn raise_descriptor_limit(wanted: usize) {
    let wanted = wanted as u64 + 1024;
    match rlimit::increase_nofile_limit(wanted) {
        // Thousands of connections still fit: worth knowing, not worth a warning.
        Ok(got) if got < 4096 => tracing::warn!(
            limit = got,
            wanted,
            "the open-file limit is low for a node; raise it (ulimit -n)"
        ),
        Ok(got) => tracing::debug!(limit = got, wanted, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// `meshrpc tls-gen`: certificates signed by the CA in DIR (made if there is none).
pub fn tls_gen(args: crate::args::TlsGenArgs) -> anyhow::Result<ExitCode> {
    use crate::certs::{self as dev, Ca};
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let ca = if args.force {
        dev::generate_with_new_ca(&args.dir, &names)
    } else {
        dev::generate(&args.dir, &names)
    }
    .map_err(anyhow::Error::msg)?;
    let dir = args.dir.display();
    match ca {
        Ca::Reused => println!("signed with the CA already in {dir}"),
        Ca::Created => println!("made a new CA in {dir} (ca.pem; keep ca-key.pem secret)"),
        Ca::Replaced => eprintln!(
            "warning: replaced the CA in {dir}: certificates it signed before no longer verify against the new ca.pem"
        ),
    }
    println!("wrote {} certificate(s) to {dir}", names.len());
    Ok(ExitCode::SUCCESS)
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

pub async fn connect(addr: &str, args: &ClientArgs, name: &str) -> Result<Client, RpcError> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let config = NodeConfig {
        name: name.to_owned(),
        connect_timeout: timeout,
        handshake_timeout: timeout,
        cookie: args.cookie.clone(),
        client_secret: args.client_secret.clone(),
        tls: args.tls.config(),
        ..NodeConfig::default()
    };
    Client::connect_with(addr, &config).await
}

/// Prints `error: <kind>: <message>` and returns exit code 1.
fn failed(e: &RpcError) -> ExitCode {
    eprintln!("error: {}: {e}", e.kind());
    ExitCode::FAILURE
}

/// `meshrpc call`: exit 0 with the JSON result on stdout, or 1 with `error: <kind>: <message>`.
pub async fn call(args: crate::args::CallArgs) -> anyhow::Result<ExitCode> {
    let body = arguments(&args.args)?;
    let client = match connect(&args.addr, &args.client, "meshrpc-call").await {
        Ok(client) => client,
        Err(e) => return Ok(failed(&e)),
    };
    let options = CallOptions::timeout(Duration::from_millis(args.client.timeout_ms));
    let method = match method_name(&args) {
        Ok(method) => method,
        Err(message) => {
            client.close().await;
            anyhow::bail!(message);
        }
    };
    let result = client.peer().call_json(&method, &*body, options).await;
    let code = match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        // A streaming method: nothing ran; open it as a stream instead.
        Err(e) if e.kind() == meshrpc::ErrorKind::Streaming => {
            let idle = Duration::from_millis(args.client.timeout_ms);
            match stream(&client, &method, &body, idle).await? {
                Streamed::Ended(code) => code,
                // A virtual actor's stream is served by its owner only: go there.
                Streamed::Moved(e) => match owner_of(&client, &args).await {
                    Some(owner) => {
                        let direct = match connect(&owner, &args.client, "meshrpc-call").await {
                            Ok(direct) => direct,
                            Err(e) => return Ok(failed(&e)),
                        };
                        let streamed = stream(&direct, &method, &body, idle).await?;
                        direct.close().await;
                        match streamed {
                            Streamed::Ended(code) => code,
                            Streamed::Moved(e) => failed(&e),
                        }
                    }
                    None => failed(&e),
                },
            }
        }
        Err(e) => failed(&e),
    };
    client.close().await;
    Ok(code)
}

/// With `--actor TYPE/KEY`: the address of the member that owns the key, as the node the
/// CLI is connected to sees it.
async fn owner_of(client: &Client, args: &crate::args::CallArgs) -> Option<String> {
    let (kind, key) = args.actor.as_deref()?.split_once('/')?;
    let options = CallOptions::timeout(Duration::from_millis(args.client.timeout_ms));
    let owner = client
        .peer()
        .call_json(
            "system.actors.owner",
            &serde_json::json!([kind, key]),
            options,
        )
        .await
        .ok()?;
    let members = client
        .peer()
        .call_json("system.members", &serde_json::json!([]), options)
        .await
        .ok()?;
    members.as_array()?.iter().find_map(|m| {
        (m.get("name")? == &owner).then(|| m.get("addr")?.as_str().map(str::to_owned))?
    })
}

/// How a stream the CLI opened ended.
enum Streamed {
    /// With this exit code, its items printed.
    Ended(ExitCode),
    /// Refused before any item: the key lives elsewhere.
    Moved(RpcError),
}

/// `meshrpc call` on a streaming method: each item the callee sends is printed as one JSON
/// line as it arrives; if the callee reads an upload, JSON values from stdin are streamed
/// to it (any whitespace between them) until stdin ends. Exits 0 after a clean end (with
/// the callee's reply on a last line unless it is `null`), 1 after a mid-stream error.
async fn stream(
    client: &Client,
    method: &str,
    body: &RawValue,
    idle: Duration,
) -> anyhow::Result<Streamed> {
    use futures_util::StreamExt;
    use std::io::Write;
    let options = meshrpc::stream::StreamOptions::default().idle(Some(idle));
    let (sink, mut items) = match client.peer().stream_json(method, body, options) {
        Ok(opened) => opened,
        Err(e) => return Ok(Streamed::Ended(failed(&e))),
    };
    let upload = tokio::spawn(upload_stdin(sink));
    let mut out = std::io::stdout().lock();
    let mut code = ExitCode::SUCCESS;
    let mut first = true;
    while let Some(item) = items.next().await {
        match item {
            Err(e) if first && e.kind() == meshrpc::ErrorKind::Moved => {
                upload.abort();
                return Ok(Streamed::Moved(e));
            }
            Ok(value) => {
                writeln!(out, "{value}")
                    .and_then(|()| out.flush())
                    .context("cannot write to stdout")?;
            }
            Err(e) => {
                code = failed(&e);
                break;
            }
        }
        first = false;
    }
    if let Some(Ok(reply)) = items.reply::<serde_json::Value>() {
        if !reply.is_null() {
            writeln!(out, "{reply}").context("cannot write to stdout")?;
        }
    }
    upload.abort();
    Ok(Streamed::Ended(code))
}

/// Streams the JSON values on stdin to `sink`, once the callee shows it reads them.
async fn upload_stdin(sink: meshrpc::stream::ItemSink<serde_json::Value>) {
    if sink.ready().await.is_err() {
        return; // over before the callee wanted anything
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<serde_json::Value, String>>(16);
    // Reading stdin blocks: a thread of its own, which stops with the process.
    std::thread::spawn(move || {
        let stdin = std::io::stdin().lock();
        for value in serde_json::Deserializer::from_reader(stdin).into_iter() {
            let value = value.map_err(|e| format!("stdin is not a sequence of JSON values: {e}"));
            if tx.blocking_send(value).is_err() {
                return;
            }
        }
    });
    while let Some(value) = rx.recv().await {
        match value {
            Ok(value) => {
                if let Err(e) = sink.send(&value).await {
                    eprintln!("error: {}: {e}", e.kind());
                    return;
                }
            }
            Err(message) => {
                // Not a clean end: the callee must not take a cut upload for the whole.
                eprintln!("error: bad_arguments: {message}");
                std::process::exit(1);
            }
        }
    }
    sink.finish();
}

/// The wire name of what `meshrpc call` calls: `TYPE.METHOD/KEY` for a virtual actor,
/// `system.group.any|all/GROUP/METHOD` for a group, else the method itself.
fn method_name(args: &crate::args::CallArgs) -> Result<String, String> {
    let method = &args.method;
    if let Some(actor) = &args.actor {
        let Some((kind, key)) = actor.split_once('/') else {
            return Err(format!(
                "--actor takes TYPE/KEY (e.g. vcounter/user-42), not `{actor}`"
            ));
        };
        return Ok(format!("{kind}.{method}/{key}"));
    }
    if let Some(group) = &args.group {
        let how = if args.all { "all" } else { "any" };
        return Ok(format!("system.group.{how}/{group}/{method}"));
    }
    Ok(method.clone())
}

/// The JSON arguments of `meshrpc call`, as the text given (a number keeps its digits):
/// a positional array, or an object when every argument is `NAME=JSON`.
fn arguments(args: &[String]) -> anyhow::Result<Box<RawValue>> {
    let named = |arg: &str| -> Option<(String, String)> {
        let (name, value) = arg.split_once('=')?;
        let is_name = !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        is_name.then(|| (name.to_owned(), value.to_owned()))
    };
    let json = |i: usize, text: &str| -> anyhow::Result<()> {
        serde_json::from_str::<&RawValue>(text)
            .map(drop)
            .with_context(|| {
                format!(
                    "argument {} is not JSON: {text} (quote strings: '\"text\"')",
                    i + 1
                )
            })
    };
    let pairs: Vec<Option<(String, String)>> = args
        .iter()
        .map(|a| if json(0, a).is_ok() { None } else { named(a) })
        .collect();
    let text = if !args.is_empty() && pairs.iter().all(Option::is_some) {
        let mut fields = Vec::with_capacity(args.len());
        for (i, (name, value)) in pairs.into_iter().flatten().enumerate() {
            json(i, &value).with_context(|| format!("the value of `{name}`"))?;
            fields.push(format!("{}:{value}", serde_json::to_string(&name)?));
        }
        format!("{{{}}}", fields.join(","))
    } else {
        if pairs.iter().any(Option::is_some) {
            anyhow::bail!("give every argument by position or every one as NAME=JSON, not both");
        }
        for (i, arg) in args.iter().enumerate() {
            json(i, arg)?;
        }
        format!("[{}]", args.join(","))
    };
    Ok(RawValue::from_string(text)?)
}

/// `meshrpc members`: `NAME ADDR STATUS` per line (or `--json`), itself included.
pub async fn actors(args: crate::args::ActorsArgs) -> anyhow::Result<ExitCode> {
    let client = match connect(&args.addr, &args.client, "meshrpc-actors").await {
        Ok(client) => client,
        Err(e) => return Ok(failed(&e)),
    };
    /// What `system.actors.page` answers.
    #[derive(serde::Deserialize)]
    struct Page {
        count: usize,
        activations: Vec<Activation>,
        /// Where the next page starts (unused: the CLI prints the first).
        #[serde(rename = "next")]
        _next: Option<(String, String)>,
    }
    // The first page (nodes hold up to millions; a node of the previous release has no
    // pages, only its whole list).
    let page = client
        .peer()
        .call::<Page>("system.actors.page", (1000usize, None::<(String, String)>))
        .await;
    let result = match page {
        Err(e) if e.kind() == meshrpc::ErrorKind::MethodNotFound => {
            (client.peer().call("system.actors", ()).await).map(|activations: Vec<Activation>| {
                Page {
                    count: activations.len(),
                    activations,
                    _next: None,
                }
            })
        }
        other => other,
    };
    client.close().await;
    let Page {
        count, activations, ..
    } = match result {
        Ok(page) => page,
        Err(e) => return Ok(failed(&e)),
    };
    if count > activations.len() {
        eprintln!(
            "the first {} of {count} activations (system.actors.page lists the rest)",
            activations.len()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&activations)?);
    } else {
        for a in &activations {
            println!("{}/{}", a.kind, a.key);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reminders(args: crate::args::RemindersArgs) -> anyhow::Result<ExitCode> {
    let client = match connect(&args.addr, &args.client, "meshrpc-reminders").await {
        Ok(client) => client,
        Err(e) => return Ok(failed(&e)),
    };
    /// What `system.reminders` answers, one per reminder.
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Reminder {
        #[serde(rename = "type")]
        kind: String,
        key: String,
        name: String,
        period_ms: u64,
        owner: Option<String>,
    }
    let result = (client.peer())
        .call::<Vec<Reminder>>("system.reminders", ())
        .await;
    client.close().await;
    let reminders = match result {
        Ok(reminders) => reminders,
        Err(e) => return Ok(failed(&e)),
    };
    if args.json {
        println!("{}", serde_json::to_string(&reminders)?);
    } else {
        for r in &reminders {
            let owner = r.owner.as_deref().unwrap_or("(no live host)");
            let period = std::time::Duration::from_millis(r.period_ms);
            println!(
                "{}/{} {} every {period:?} on {owner}",
                r.kind, r.key, r.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn members(args: MembersArgs) -> anyhow::Result<ExitCode> {
    let client = match connect(&args.addr, &args.client, "meshrpc-members").await {
        Ok(client) => client,
        Err(e) => return Ok(failed(&e)),
    };
    let result = client
        .peer()
        .call::<Vec<MemberSummary>>("system.members", ())
        .await;
    client.close().await;
    let members = match result {
        Ok(members) => members,
        Err(e) => return Ok(failed(&e)),
    };
    if args.json {
        println!("{}", serde_json::to_string(&members)?);
    } else {
        let width = members.iter().map(|m| m.name.len()).max().unwrap_or(0);
        let addr_width = members.iter().map(|m| m.addr.len()).max().unwrap_or(0);
        for m in &members {
            println!(
                "{:width$}  {:addr_width$}  {}",
                m.name,
                m.addr,
                m.status.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
