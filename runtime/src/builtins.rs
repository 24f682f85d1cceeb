//! Methods every node serves: `system.listMethods`, `system.methodHelp`, `system.whoami` and
//! `system.peers`. They hold a weak handle, so they never keep a node alive.

use serde::{Deserialize, Serialize};

use crate::node::{Node, WhoAmI};

/// One entry of `system.peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSummary {
    /// The peer's name.
    pub name: String,
    /// Its id, in hex.
    pub id: String,
    /// The address it listens on.
    pub addr: String,
}

pub(crate) fn register(node: &Node) {
    let weak = node.downgrade();
    node.register_fn("system.listMethods", move |(): ()| {
        weak.upgrade()
            .map(|n| n.methods().names())
            .unwrap_or_default()
    })
    .help("system.listMethods() -> [string]: the names of every method this node serves");

    let weak = node.downgrade();
    node.register("system.methodHelp", move |name: String| {
        let help = weak.upgrade().and_then(|n| n.methods().help(&name));
        async move { help.ok_or_else(|| format!("no method `{name}` is registered")) }
    })
    .help("system.methodHelp(name) -> string: the help text given when `name` was registered");

    let (name, id, addr) = (
        node.name().to_owned(),
        node.id().to_string(),
        node.addr().to_string(),
    );
    node.register_fn("system.whoami", move |(): ()| WhoAmI {
        name: name.clone(),
        id: id.clone(),
        addr: addr.clone(),
    })
    .help("system.whoami() -> {name, id, addr}: this node's identity");

    let weak = node.downgrade();
    node.register_fn("system.peers", move |(): ()| {
        let peers = weak.upgrade().map(|n| n.peers()).unwrap_or_default();
        peers
            .into_iter()
            .map(|p| PeerSummary {
                name: p.name,
                id: p.id.to_string(),
                addr: p.addr.map(|a| a.to_string()).unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    })
    .help("system.peers() -> [{name, id, addr}]: the nodes this node has a live link to");
}
