//! `meshrpc bench`: drive load at a node (or ask a node to load one of its peers) and print
//! what `crate::load` measured, as a table or one JSON object.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cpu;
use crate::load::{self, LoadSpec, Report};
use anyhow::{ensure, Context};
use meshrpc::{CallOptions, Peer};

use crate::args::BenchArgs;

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let spec = spec(&args)?;
    let (report, target) = match (&args.from, &args.to) {
        (Some(from), Some(to)) => (
            remote(&args, from, to, &spec).await?,
            format!("{to} from {from}"),
        ),
        _ => {
            let addr = args
                .addr
                .clone()
                .context("give the node's address, or --from and --to")?;
            (local(&args, &addr, &spec).await?, addr)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&args, &spec, &target, &report);
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, crate::plot::hgrm(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        crate::plot::svg(&[(target.clone(), report.clone())], path)?;
    }
    if let Some(secs) = report.lost_after_secs {
        eprintln!(
            "error: the target went away {secs:.2} s into the run (its link closed); the figures cover the run until then"
        );
        return Ok(ExitCode::FAILURE);
    }
    // A load that mostly failed measured nothing worth a zero exit status.
    let failed = report.failed();
    if failed > 0 && failed >= report.calls {
        eprintln!(
            "error: {failed} of {} calls failed; one said: {}",
            failed + report.calls,
            report.sample_error.as_deref().unwrap_or("?")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn spec(args: &BenchArgs) -> anyhow::Result<LoadSpec> {
    let call_args: serde_json::Value = serde_json::from_str(&args.args)
        .with_context(|| format!("--args is not JSON: {}", args.args))?;
    ensure!(
        call_args.is_array(),
        "--args must be a JSON array of positional arguments"
    );
    ensure!(
        args.concurrency > 0 && args.connections > 0,
        "--concurrency and --connections must be at least 1"
    );
    ensure!(
        args.connections <= args.concurrency,
        "more connections than calls in flight would leave some idle"
    );
    if let Some(secs) = args.duration {
        ensure!(
            secs.is_finite() && secs > 0.0,
            "--duration must be more than 0 seconds, got {secs}"
        );
    }
    ensure!(args.calls != Some(0), "--calls must be at least 1");
    if let Some(keys) = args.keys {
        ensure!(
            (1..=1_000_000).contains(&keys),
            "--keys must be 1 to 1000000, got {keys}"
        );
        ensure!(
            args.method.contains('/') && args.payload.is_none() && !args.stream,
            "--keys spreads a virtual actor's calls (--method TYPE.METHOD/KEY) over KEY-0, KEY-1, ..."
        );
    }
    ensure!(
        args.warmup.is_finite() && args.warmup >= 0.0,
        "--warmup must be 0 or more seconds"
    );
    let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0)).as_millis() as u64;
    Ok(LoadSpec {
        method: args.method.clone(),
        args: call_args,
        payload: args.payload,
        concurrency: args.concurrency,
        duration_ms: args.duration.map(seconds),
        calls: args.calls,
        warmup_ms: seconds(args.warmup),
        timeout_ms: args.client.timeout_ms,
        stream: args.stream,
        stalled_stream: args.stalled_stream,
        keys: args.keys,
    })
}

/// Opens `--connections` clients and runs the load from this process.
async fn local(args: &BenchArgs, addr: &str, spec: &LoadSpec) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = crate::commands::connect(addr, &args.client, "meshrpc-bench").await?;
        clients.push(client);
    }
    let peers: Vec<Peer> = clients.iter().map(|c| c.peer().clone()).collect();
    let progress = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(progress.clone(), spec);
    // The target's process, when it runs on this machine: its CPU per call is reported too.
    let node = peers
        .first()
        .map(|p| p.info().remote)
        .filter(|remote| remote.ip().is_loopback())
        .and_then(|remote| cpu::listener_pid(remote.port()));
    let report = load::run(&peers, spec, progress, node).await;
    if let Some(bar) = bar {
        bar.abort();
    }
    for client in clients {
        client.close().await;
    }
    Ok(report)
}

/// Asks node `from` to run the load against its peer `to` (`bench.run`, a demo service).
async fn remote(args: &BenchArgs, from: &str, to: &str, spec: &LoadSpec) -> anyhow::Result<Report> {
    let client = crate::commands::connect(from, &args.client, "meshrpc-bench").await?;
    let budget = spec.duration_ms.unwrap_or(10_000) + spec.warmup_ms + spec.timeout_ms + 10_000;
    let options = CallOptions::timeout(Duration::from_millis(budget));
    let call = serde_json::json!([to, spec]);
    let result = client.peer().call_json("bench.run", &call, options).await;
    client.close().await;
    let report = result.with_context(|| format!("{from} could not run the load"))?;
    Ok(serde_json::from_value(report)?)
}

/// A live rate on stderr when it is a terminal; `None` otherwise.
fn progress_bar(count: Arc<AtomicU64>, spec: &LoadSpec) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = match (spec.duration_ms, spec.calls) {
        (Some(ms), _) => format!("{} s", ms.div_ceil(1000)),
        (None, Some(n)) => format!("{} calls", thousands(n)),
        (None, None) => "10 s".to_owned(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    Some(tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let (mut last_count, mut last_at) = (0u64, started);
        loop {
            tick.tick().await;
            let (now, done) = (std::time::Instant::now(), count.load(Ordering::Relaxed));
            let rate = (done - last_count) as f64 / now.duration_since(last_at).as_secs_f64();
            (last_count, last_at) = (done, now);
            bar.set_message(format!(
                "{} calls/s · {} s of {total}",
                thousands(rate as u64),
                started.elapsed().as_secs()
            ));
            bar.tick();
        }
    }))
}

/// `386844` → `386,844`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print(args: &BenchArgs, spec: &LoadSpec, target: &str, r: &Report) {
    let what = match spec.payload {
        _ if spec.stream => format!(
            "streams of {} (bytes) items",
            spec.payload.unwrap_or(64 << 10)
        ),
        Some(n) => format!("echo({n} bytes)"),
        None => format!("{}({})", spec.method, args.args),
    };
    println!(
        "{what} against {target}: {} connection(s), {} in flight, {:.2} s",
        args.connections, spec.concurrency, r.secs
    );
    let unit = if spec.stream { "items" } else { "calls" };
    println!(
        "  {unit:<11} {} ({} {unit}/s)",
        thousands(r.calls),
        thousands(r.calls_per_sec as u64)
    );
    if spec.payload.is_some() || spec.stream {
        println!("  throughput  {:.1} MB/s (payload, one way)", r.mb_per_sec);
    }
    println!(
        "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
        r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us, r.mean_us
    );
    match (r.client_cpu_us_per_call, r.node_cpu_us_per_call) {
        (Some(client), Some(node)) => println!(
            "  CPU/call    {:.2} µs: {client:.2} here + {node:.2} in the node (user + system)",
            client + node
        ),
        (Some(client), None) => println!(
            "  CPU/call    {client:.2} µs here (user + system; the node is not on this machine)"
        ),
        _ => {}
    }
    if let Some(secs) = r.lost_after_secs {
        println!("  target      went away {secs:.2} s into the run");
    }
    if r.errors.is_empty() {
        println!("  errors      none");
    } else {
        let errors: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("  errors      {}", errors.join(", "));
        if let Some(sample) = &r.sample_error {
            println!("  for one     {sample}");
        }
    }
}

/// `meshrpc bench-plot`: the curves of several `--json` results on one plot.
pub fn plot(args: crate::args::BenchPlotArgs) -> anyhow::Result<ExitCode> {
    let mut series = Vec::with_capacity(args.reports.len());
    for path in &args.reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Report = serde_json::from_str(text.trim()).with_context(|| {
            format!("{} is not a `meshrpc bench --json` result", path.display())
        })?;
        let label = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        series.push((label, report));
    }
    crate::plot::svg(&series, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
