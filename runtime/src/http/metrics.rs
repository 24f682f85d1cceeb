//! `/metrics`: the process-wide Prometheus recorder behind the `metrics` facade (installed
//! when the program asks, [`install_prometheus`]), and the
//! gauges a node sets just before each scrape (links, clients, members by status, how
//! stretched its failure detector is, actor mailbox depths). Call counters and latencies are recorded by the link layer.

use std::sync::Arc;

use crate::cluster::links::WeakLinks;
use crate::cluster::membership::Membership;
use crate::cluster::MemberStatus;
use crate::handlers::Mailboxes;

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process),
/// installed only when the program asks ([`install_prometheus`]; `meshrpc node` does).
#[cfg(feature = "prometheus")]
mod recorder {
    use std::sync::{Mutex, OnceLock};

    use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    /// Held while installing: two first calls at once install once.
    static INSTALLING: Mutex<()> = Mutex::new(());

    pub(super) fn install() -> Result<(), BuildError> {
        let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        if HANDLE.get().is_some() {
            return Ok(());
        }
        let handle = builder().install_recorder()?;
        let _ = HANDLE.set(handle);
        Ok(())
    }

    pub(super) fn handle() -> Option<&'static PrometheusHandle> {
        HANDLE.get()
    }

    /// Latency buckets from 10 µs to 10 s, so `meshrpc_call_seconds` is a Prometheus
    /// histogram (aggregatable across nodes) rather than a summary.
    fn builder() -> PrometheusBuilder {
        const BUCKETS: [f64; 13] = [
            1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2, 0.25, 1.0, 10.0,
        ];
        let builder = PrometheusBuilder::new();
        match builder.set_buckets(&BUCKETS) {
            Ok(builder) => builder,
            Err(_) => PrometheusBuilder::new(), // only fails for an empty list
        }
    }
}

/// Installs the process-wide Prometheus recorder behind the `metrics` facade, so a node's
/// gateway serves `GET /metrics`. The library itself only emits to the facade and never
/// installs a recorder: a program that has its own recorder keeps it, one that wants
/// Prometheus calls this once (`meshrpc node` does). Calling it again is a no-op.
///
/// # Errors
/// The exporter's error, when another recorder already holds the process.
#[cfg(feature = "prometheus")]
pub fn install_prometheus() -> Result<(), metrics_exporter_prometheus::BuildError> {
    recorder::install()
}

/// The Prometheus text of every metric recorded, when [`install_prometheus`] ran.
pub(crate) fn render() -> Option<String> {
    #[cfg(feature = "prometheus")]
    return recorder::handle().map(|handle| handle.render());
    #[cfg(not(feature = "prometheus"))]
    None
}

/// What a node's gauges are read from.
pub(crate) struct Stats {
    /// The node's name, the `node` label of every gauge.
    pub(crate) name: String,
    /// The node's id and address, for the dashboard.
    pub(crate) id: crate::wire::NodeId,
    pub(crate) addr: std::net::SocketAddr,
    /// Calls served per method, for the dashboard.
    pub(crate) calls: Option<Arc<crate::link::CallStats>>,
    pub(crate) links: WeakLinks,
    pub(crate) membership: Membership,
    pub(crate) mailboxes: Mailboxes,
    /// Virtual-actor activations here, per type.
    pub(crate) activations: Arc<dyn Fn() -> Vec<(String, usize)> + Send + Sync>,
}

impl Stats {
    /// Sets the gauges `/metrics` reports: links, members by status, mailbox depths.
    pub(crate) async fn record(&self) {
        let node = metrics::SharedString::from(self.name.clone());
        if let Some(links) = self.links.upgrade() {
            metrics::gauge!("meshrpc_links", "node" => node.clone())
                .set(links.peers().list().len() as f64);
            metrics::gauge!("meshrpc_client_connections", "node" => node.clone())
                .set(links.clients() as f64);
        }
        let members = self.membership.members();
        for status in [
            MemberStatus::Up,
            MemberStatus::Suspect,
            MemberStatus::Down,
            MemberStatus::Left,
        ] {
            let n = members.iter().filter(|m| m.status == status).count();
            metrics::gauge!("meshrpc_members", "node" => node.clone(), "status" => status.as_str())
                .set(n as f64);
        }
        metrics::gauge!("meshrpc_membership_stretch", "node" => node.clone())
            .set(f64::from(self.membership.stretch()));
        let mailboxes = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        for (actor, depth) in mailboxes.iter() {
            metrics::gauge!("meshrpc_mailbox_depth", "node" => node.clone(), "actor" => actor.clone()).set(depth() as f64);
        }
        drop(mailboxes);
        for (kind, n) in (self.activations)() {
            metrics::gauge!("meshrpc_activations", "node" => node.clone(), "type" => kind)
                .set(n as f64);
        }
    }
}
