//! The command line: every subcommand's flags, as clap reads them. What each command does
//! is in `commands.rs`, `bench.rs` and `demo.rs`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use clap::{Parser, Subcommand, ValueEnum};

/// meshrpc: symmetric RPC between peer nodes over framed TCP.
#[derive(Parser)]
#[command(name = "meshrpc", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a node serving the demo services (add, square, cube, echo, sleep, fail, crash,
    /// counter.*, fanout, system.*) until SIGINT or SIGTERM.
    Node(NodeArgs),
    /// Call METHOD on the node at ADDR and print the JSON result.
    Call(CallArgs),
    /// Print a node's view of the cluster: one line per member, NAME ADDR STATUS.
    Members(MembersArgs),
    /// Print the virtual-actor activations living on a node: one line per activation,
    /// TYPE/KEY.
    Actors(ActorsArgs),
    /// Print the reminders of the cluster's state store, as the node at ADDR sees them: one
    /// line per reminder, TYPE/KEY NAME every PERIOD on OWNER.
    Reminders(RemindersArgs),
    /// Load a node (or, with --from/--to, a link between two nodes) and report throughput
    /// and latency percentiles.
    Bench(BenchArgs),
    /// Draw the latency percentile curves of several `meshrpc bench --json` results on one
    /// SVG plot, to compare runs.
    BenchPlot(BenchPlotArgs),
    /// Start a local cluster of real node processes, show them calling each other, and exit.
    Demo(DemoArgs),
    /// Write a development CA and certificates for NAMEs into DIR (ca.pem, NAME.pem,
    /// NAME-key.pem), valid for localhost and 127.0.0.1: for --tls-cert/--tls-key/--tls-ca.
    TlsGen(TlsGenArgs),
}

#[derive(clap::Args)]
pub(crate) struct BenchPlotArgs {
    /// Results written by `meshrpc bench --json` (one JSON object per file); each file's
    /// name labels its curve.
    #[arg(required = true)]
    pub(crate) reports: Vec<std::path::PathBuf>,
    /// The SVG file to write.
    #[arg(short, long, default_value = "bench.svg")]
    pub(crate) output: std::path::PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct TlsGenArgs {
    /// Where to write the files. A CA already there (ca.pem, ca-key.pem) signs the new
    /// certificates, so the ones issued before keep working.
    pub(crate) dir: std::path::PathBuf,
    /// One certificate per name (nodes and clients alike).
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
    /// Make a new CA even if DIR has one: every certificate the old CA signed stops
    /// verifying against the new ca.pem.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Mutual TLS on every link: all three files, or none.
#[derive(clap::Args)]
pub(crate) struct TlsArgs {
    /// This side's certificate (PEM), signed by the cluster CA.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// The cluster CA (PEM): peers must present certificates it signed.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
}

impl TlsArgs {
    pub(crate) fn config(&self) -> Option<meshrpc::TlsConfig> {
        Some(meshrpc::TlsConfig {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }
}

/// How a node finds peers besides its seeds.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Discover {
    /// UDP beacons on a multicast group (see --multicast-group, --cluster).
    Multicast,
}

#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// This node's name, unique among the live members of the cluster.
    #[arg(long)]
    pub(crate) name: String,
    /// Address to listen on (HOST:PORT; a name is resolved); port 0 picks a free port
    /// (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
    pub(crate) listen: String,
    /// Address to tell peers to dial, when it differs from the listen address (containers,
    /// NAT, proxies); a name is resolved at start. Default: the listen address (127.0.0.1
    /// for 0.0.0.0).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) advertise: Option<String>,
    /// A peer to join through (HOST:PORT; a DNS name is resolved and every address it returns
    /// is dialed); repeatable. Retried with backoff until reached.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub(crate) seeds: Vec<String>,
    /// Find peers without seeds.
    #[arg(long, value_enum)]
    pub(crate) discover: Option<Discover>,
    /// With --discover multicast: the cluster name; beacons from other clusters are ignored.
    #[arg(long, default_value = "meshrpc")]
    pub(crate) cluster: String,
    /// With --discover multicast: the group and port of the beacons.
    #[arg(long, default_value = "239.255.77.77:47777")]
    pub(crate) multicast_group: SocketAddrV4,
    /// With --discover multicast: the interface to use (0.0.0.0: as the routes say;
    /// 127.0.0.1: this machine only).
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) multicast_if: Ipv4Addr,
    /// Cluster cookie: peers and clients must know it (HMAC challenge-response; the secret
    /// never crosses the wire). Without one, anyone who can connect may join.
    #[arg(long, env = "MESHRPC_COOKIE", hide_env_values = true)]
    pub(crate) cookie: Option<String>,
    /// The client credential (needs --cookie): clients proving it may call methods but never
    /// be a node. Give nodes the cookie and callers this (docs/SECURITY.md).
    #[arg(long, env = "MESHRPC_CLIENT_SECRET", hide_env_values = true)]
    pub(crate) client_secret: Option<String>,
    /// Idle time after which a link carries a heartbeat, and the longest membership news
    /// waits before it goes to a few members (at most 200 ms), in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub(crate) heartbeat_ms: u64,
    /// Silence after which a link is dropped; membership probes a member every half of it,
    /// waits up to 0.45 of it for an answer, and keeps a member suspect this long before it
    /// is down. In milliseconds; must exceed twice the heartbeat.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) down_after_ms: u64,
    /// Close a link on which no call went either way for this long, in milliseconds (0:
    /// never). Links open again on the next call.
    #[arg(long, default_value_t = 60_000)]
    pub(crate) link_idle_ms: u64,
    /// Serve XML-RPC, JSON-RPC 2.0, /metrics and /health over HTTP here (HOST:PORT; port 0
    /// picks one, printed on stdout as `http on HOST:PORT` after the `listening on` line).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) http: Option<SocketAddr>,
    /// Largest HTTP request body the gateway reads, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) http_max_body: usize,
    /// The gateway's token: HTTP callers send it as the Basic password (any user name:
    /// http://meshrpc:TOKEN@host:port) or as `Authorization: Bearer TOKEN`. Required with
    /// --http when the node has a cookie or TLS, unless --http-open.
    #[arg(long, env = "MESHRPC_HTTP_TOKEN", hide_env_values = true)]
    pub(crate) http_token: Option<String>,
    /// Serve the gateway without a token although the node has a cookie or TLS: a public
    /// gateway, on purpose.
    #[arg(long, conflicts_with = "http_token")]
    pub(crate) http_open: bool,
    /// Serve the gateway over HTTPS with the node's certificate (needs --tls-cert, --tls-key
    /// and --tls-ca).
    #[arg(long)]
    pub(crate) http_tls: bool,
    /// Only these methods over HTTP (repeatable; `*` matches anything: `counter.*`).
    /// Default: every method; node-only methods are refused anyway.
    #[arg(long = "http-methods", value_name = "PATTERN")]
    pub(crate) http_methods: Vec<String>,
    /// Time an HTTP client has to send a request's headers (and its body), and to start its
    /// next request on a kept-alive connection, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) http_header_timeout_ms: u64,
    /// HTTP connections open at once; more are closed at once.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) http_max_connections: usize,
    /// Megabytes of large frames (over 1 MiB) in progress across all links; a link whose
    /// frame would pass it is closed, saying why.
    #[arg(long, default_value_t = 256)]
    pub(crate) frame_budget_mb: usize,
    /// Links (to nodes and clients) held at once; a dialer beyond it is refused, saying why.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Connections to the binary port still in their handshake at once; more are closed at
    /// once.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_handshakes: usize,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub(crate) max_frame: usize,
    /// How many virtual-actor activations this node may hold: past nine tenths of it the
    /// least recently called are deactivated, and new ones wait (`overloaded`) for room.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) max_activations: usize,
    /// Where virtual actors that persist keep their state: `sqlite:PATH` (one file that the
    /// nodes of one machine may share) or `postgres://USER@HOST:PORT/DB`. Without it, every
    /// virtual actor's state lives only in its activation.
    #[arg(long, env = "MESHRPC_STATE")]
    pub(crate) state: Option<String>,
    /// The longest a request may run on this node, whatever deadline its caller gave (or
    /// none), in milliseconds; 0: no bound. Streams are not bounded by it.
    #[arg(long, default_value_t = 300_000)]
    pub(crate) max_call_ms: u64,
    /// Deadline of calls this node makes (fanout), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) timeout_ms: u64,
    /// Worker threads (0: one per CPU). 1 runs the node on a single thread: the cheapest
    /// choice when many nodes share a machine.
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// The newest protocol version this node speaks on links (it always speaks the one
    /// before too): 3 makes it speak exactly as the previous release. Links use the newest
    /// version both ends speak, so upgrades need no setting (docs/DEPLOY.md).
    #[arg(long, default_value_t = meshrpc::wire::PROTOCOL_VERSION)]
    pub(crate) max_protocol: u16,
}

/// Options shared by the commands that connect to a node as a client.
#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// The cluster cookie, if the node requires one (a node's credential: prefer
    /// --client-secret for callers).
    #[arg(long, env = "MESHRPC_COOKIE", hide_env_values = true)]
    pub(crate) cookie: Option<String>,
    /// The node's client secret: lets this process call, never be a node.
    #[arg(long, env = "MESHRPC_CLIENT_SECRET", hide_env_values = true)]
    pub(crate) client_secret: Option<String>,
    /// How long to wait for the node, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) timeout_ms: u64,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(clap::Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The node's address (HOST:PORT).
    pub(crate) addr: String,
    /// The method to call, e.g. `add` or `counter.incr` (with --actor: `incr`).
    pub(crate) method: String,
    /// Call the virtual actor TYPE/KEY (e.g. `vcounter/user-42`), wherever it lives: the
    /// node at ADDR routes the call to the key's owner.
    #[arg(long, value_name = "TYPE/KEY", conflicts_with = "group")]
    pub(crate) actor: Option<String>,
    /// Call a member of the process group NAME (one chosen at random), through ADDR.
    #[arg(long, value_name = "NAME")]
    pub(crate) group: Option<String>,
    /// With --group: call every member and print each one's result.
    #[arg(long, requires = "group")]
    pub(crate) all: bool,
    /// Arguments, each a JSON value (`meshrpc call 127.0.0.1:4000 add 2 -3`; quote
    /// strings: '"text"'), or all of them by name as NAME=JSON (`add a=40 b=2`). Options may
    /// come before or after them.
    #[arg(allow_negative_numbers = true)]
    pub(crate) args: Vec<String>,
}

#[derive(clap::Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The node's address (HOST:PORT).
    pub(crate) addr: String,
    /// Print a JSON array of {name, addr, status, id} instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args)]
pub(crate) struct ActorsArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The node's address (HOST:PORT).
    pub(crate) addr: String,
    /// Print a JSON array of {type, key} instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args)]
pub(crate) struct RemindersArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The node's address (HOST:PORT).
    pub(crate) addr: String,
    /// Print a JSON array of {type, key, name, period_ms, owner} instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The node to load (HOST:PORT). Not with --from.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub(crate) addr: Option<String>,
    /// Ask this node (HOST:PORT) to run the load against its peer --to, over their link.
    #[arg(long, requires = "to")]
    pub(crate) from: Option<String>,
    /// With --from: the name of the peer to load.
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// The method to call.
    #[arg(long, default_value = "add")]
    pub(crate) method: String,
    /// Its arguments, a JSON array, encoded with bincode as a Rust caller would.
    #[arg(long, default_value = "[2,3]", allow_hyphen_values = true)]
    pub(crate) args: String,
    /// Spread the calls over N keys of a virtual actor: --method TYPE.METHOD/KEY calls
    /// KEY-0 to KEY-(N-1) in turn.
    #[arg(long, value_name = "N")]
    pub(crate) keys: Option<usize>,
    /// Call `echo` with this many bytes instead of --method.
    #[arg(long, value_name = "BYTES")]
    pub(crate) payload: Option<usize>,
    /// Connections to open (calls are spread over them). Not with --from.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Calls in flight in total.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// How long to run, in seconds (default 10 unless --calls is given).
    #[arg(long, conflicts_with = "calls")]
    pub(crate) duration: Option<f64>,
    /// How many calls to make.
    #[arg(long)]
    pub(crate) calls: Option<u64>,
    /// Unmeasured load first, in seconds.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) warmup: f64,
    /// Read server streams of --payload-byte items (default 65536) instead of calling:
    /// --concurrency streams, items/s and MB/s.
    #[arg(long, conflicts_with_all = ["from", "calls"])]
    pub(crate) stream: bool,
    /// Hold a stream nobody reads on each connection during the load, to see what a
    /// stalled stream costs the calls beside it.
    #[arg(long, conflicts_with = "stream")]
    pub(crate) stalled_stream: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also draw the latency percentile curve (p50 to p99.999) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// Also write the latency distribution in HdrHistogram's .hgrm percentile format.
    #[arg(long, value_name = "FILE")]
    pub(crate) hgrm: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// How long the closing load run lasts, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) load_ms: u64,
}
