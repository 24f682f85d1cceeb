//! The live dashboard: `GET /` serves one page (HTML and a little plain JavaScript,
//! compiled into the binary), which reads `GET /api/dashboard` every second and draws the
//! node, its members, its links with calls per second each way, every method served with
//! its totals and latency, actors' mailboxes and virtual-actor activations. Rates are the
//! page's: it divides the change of each counter between two reads by the time between.

use serde_json::{json, Value};

use super::metrics::Stats;
use crate::link::MethodFigures;

/// The page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

/// What the page reads: everything at this moment.
pub(crate) fn snapshot(stats: &Stats) -> Value {
    let members: Vec<Value> = stats
        .membership
        .members()
        .into_iter()
        .map(|m| {
            json!({
                "name": m.name,
                "id": m.id.to_string(),
                "addr": m.addr.map(|a| a.to_string()),
                "status": m.status.as_str(),
            })
        })
        .collect();
    let links: Vec<Value> = match stats.links.upgrade() {
        Some(links) => links
            .peers()
            .list()
            .iter()
            .map(|conn| {
                let (made, served) = conn.calls();
                let peer = conn.peer();
                json!({
                    "peer": peer.name,
                    "addr": peer.addr.map(|a| a.to_string()),
                    "calls_made": made,
                    "calls_served": served,
                })
            })
            .collect(),
        None => Vec::new(),
    };
    let methods: Vec<MethodFigures> = stats
        .calls
        .as_ref()
        .map(|calls| calls.figures())
        .unwrap_or_default();
    let actors: Vec<Value> = {
        let mailboxes = stats.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        mailboxes
            .iter()
            .map(|(name, depth)| json!({ "name": name, "mailbox": depth() }))
            .collect()
    };
    let activations: Vec<Value> = (stats.activations)()
        .into_iter()
        .map(|(kind, n)| json!({ "type": kind, "activations": n }))
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "node": { "name": stats.name, "id": stats.id.to_string(), "addr": stats.addr.to_string() },
        "time_ms": now_ms,
        "members": members,
        "links": links,
        "methods": methods,
        "actors": actors,
        "activations": activations,
    })
}
