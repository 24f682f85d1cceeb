//! Location-transparent actors: virtual actors by key (Orleans' grains), cluster
//! singletons, process groups (Erlang's `pg`) and monitors. Placement is computed, not
//! looked up: each key lives on the member that scores highest for it among the members
//! hosting its type ([`placement`], rendezvous hashing over the membership view), so a caller
//! sends straight to the owner.
//!
//! [`Actors`] is the node's handle on this layer: the types it hosts ([`activation`]), the
//! groups it joined, and the loop that hands activations over when the view changes. It
//! gets the narrow handles it needs from the node (the method table, the links, the
//! membership directory and handle) and stops with the node: [`Actors::close`] hands every
//! activation over (their save hooks run) before the node says goodbye. docs/ACTORS.md has
//! the guarantees.

pub(crate) mod activation;
mod builder;
mod groups;
pub(crate) mod hosted;
mod mailbox;
pub(crate) mod monitor;
pub(crate) mod placement;
mod refs;
pub(crate) mod reminders;
pub(crate) mod shedding;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::links::WeakLinks;
use crate::cluster::membership::{Directory, Membership};
use crate::cluster::{Links, Target};
use crate::error::RpcError;
use crate::handlers::Handlers;
use crate::link::local::LocalCall;
use crate::link::Connection;
use crate::state::StateStore;
use crate::wire::{Encoding, NodeId};

pub use builder::VirtualBuilder;
pub use groups::{Group, Member as GroupMember};
use hosted::Hosted;
pub use monitor::{Down, Monitored};
pub use refs::ActorRef;

/// The node-only method a new owner calls on the previous one: "let this key go".
pub(crate) const RELEASE: &str = "system.actors.release";
/// Where a node places a key: `system.actors.owner(type, key) -> name | null`.
pub(crate) const OWNER: &str = "system.actors.owner";

/// What every type and ref needs from the node.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) me: NodeId,
    pub(crate) directory: Directory,
    /// Weak: the method table holds this context, and the links hold the method table.
    links: WeakLinks,
    pub(crate) tasks: TaskTracker,
    /// Cancelled when handlers must stop (end of the shutdown grace).
    pub(crate) stop: CancellationToken,
    /// Set when the node starts stopping: no new activations.
    closing: Arc<AtomicBool>,
    pub(crate) release_timeout: Duration,
    pub(crate) default_timeout: Duration,
    /// How many activations this node may hold (`--max-activations`).
    pub(crate) budget: Arc<shedding::Budget>,
    /// Where persistent types keep their state (`--state`); none: every type is volatile.
    pub(crate) store: Option<Arc<dyn StateStore>>,
    /// Tells the reminders' task that the table changed (`reminders.rs`).
    pub(crate) reminders: Arc<tokio::sync::Notify>,
}

impl Ctx {
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The link to `to` (this node itself over the in-memory link), if the node still runs.
    pub(crate) async fn link(
        &self,
        to: NodeId,
        addr: std::net::SocketAddr,
    ) -> Result<Connection, RpcError> {
        let Some(links) = self.links.upgrade() else {
            return Err(RpcError::Shutdown("this node has stopped".to_owned()));
        };
        if to == self.me {
            Ok(links.to_self())
        } else {
            links.link(Target::Addr(addr)).await
        }
    }

    /// Calls `method` (a keyed name, `type.method/KEY`) on this node itself without a link:
    /// dispatched here, on the caller's task, as a request from a node; the answer comes
    /// back through a channel. What `ActorRef` does when this node owns the key.
    pub(crate) async fn call_here<A: serde::Serialize + ?Sized>(
        &self,
        method: &str,
        encoding: Encoding,
        args: &A,
        timeout: Duration,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        let Some(ctx) = self.links.upgrade().map(|links| links.link_ctx().clone()) else {
            return Err(RpcError::Shutdown("this node has stopped".to_owned()));
        };
        let mut body = bytes::BytesMut::new();
        let encoded = crate::wire::codec::encode_body(encoding, args, &mut body);
        encoded.map_err(|e| RpcError::BadArguments {
            method: method.to_owned(),
            detail: format!("the arguments of `{method}` cannot be encoded: {e}"),
        })?;
        let call = LocalCall {
            method,
            encoding,
            body: body.freeze(),
            timeout,
            from_node: true,
            trace: crate::link::current_trace(),
            lane: None,
        };
        crate::link::local::call(&ctx, call).await
    }
}

/// One activation, as `meshrpc actors` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The virtual-actor type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The key.
    pub key: String,
}

/// The most activations one `system.actors` call lists.
pub(crate) const MAX_PAGE: usize = 1000;

/// A page of activations, as `system.actors.page` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Page {
    /// How many activations the node holds.
    pub(crate) count: usize,
    /// These ones, in (type, key) order.
    pub(crate) activations: Vec<Activation>,
    /// Give it as `after` for the next page; `None`: this was the last.
    pub(crate) next: Option<(String, String)>,
}

/// The node's actors layer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Actors {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Ctx,
    handlers: Handlers,
    membership: Membership,
    types: DashMap<String, Arc<dyn Hosted>>,
    /// Groups this node joined: `(group, actor)`, no actor meaning the node itself.
    groups: Mutex<Vec<(String, Option<String>)>>,
}

impl Actors {
    pub(crate) fn new(
        handlers: Handlers,
        links: Links,
        membership: Membership,
        closing: Arc<AtomicBool>,
        timeouts: (Duration, Duration),
        max_activations: usize,
        store: Option<Arc<dyn StateStore>>,
    ) -> Self {
        let ctx = Ctx {
            me: links.identity().id,
            directory: membership.directory().clone(),
            links: links.downgrade(),
            tasks: handlers.tasks.clone(),
            stop: handlers.stop.clone(),
            closing,
            release_timeout: timeouts.0,
            default_timeout: timeouts.1,
            budget: Arc::new(shedding::Budget::new(max_activations)),
            store,
            reminders: Arc::default(),
        };
        let actors = Actors {
            inner: Arc::new(Inner {
                ctx,
                handlers,
                membership,
                types: DashMap::new(),
                groups: Mutex::new(Vec::new()),
            }),
        };
        actors.register_methods();
        let weak = Arc::downgrade(&actors.inner);
        let types = move || {
            (weak.upgrade())
                .map(|inner| inner.types.iter().map(|t| t.value().clone()).collect())
                .unwrap_or_default()
        };
        let ctx = &actors.inner.ctx;
        ctx.tasks
            .spawn(shedding::shed(ctx.budget.clone(), types, ctx.stop.clone()));
        if let Some(store) = ctx.store.clone() {
            let weak = Arc::downgrade(&actors.inner);
            let owns: reminders::Owns = Box::new(move |kind, key| {
                (weak.upgrade())
                    .and_then(|inner| inner.types.get(kind).map(|t| t.value().owns(key)))
                    .unwrap_or(false)
            });
            let changed = ctx.reminders.clone();
            ctx.tasks
                .spawn(reminders::run(ctx.clone(), store, owns, changed));
        }
        actors
    }

    pub(crate) fn ctx(&self) -> &Ctx {
        &self.inner.ctx
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// Tells the cluster what this node hosts now.
    async fn publish(&self) -> Result<(), RpcError> {
        let mut types: Vec<String> = self.inner.types.iter().map(|t| t.key().clone()).collect();
        types.sort();
        let groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.inner
            .membership
            .host(types, groups)
            .await
            .map_err(|message| RpcError::BadArguments {
                method: "hosting".to_owned(),
                detail: message,
            })
    }

    /// Adds a hosted type and tells the cluster.
    pub(crate) async fn add_type(&self, name: &str, kind: Arc<dyn Hosted>) -> Result<(), RpcError> {
        if self.inner.types.contains_key(name) {
            return Err(RpcError::BadArguments {
                method: name.to_owned(),
                detail: format!("virtual actor type `{name}` is already registered on this node"),
            });
        }
        self.inner.types.insert(name.to_owned(), kind);
        let published = self.publish().await;
        if published.is_err() {
            self.inner.types.remove(name);
        }
        published
    }

    /// The group `name`, as this node sees it.
    pub(crate) fn group(&self, name: &str) -> Group {
        Group::new(self.inner.ctx.clone(), Arc::downgrade(&self.inner), name)
    }

    /// Joins `group` (as the node, or as one of its actors) and tells the cluster.
    pub(crate) async fn join(&self, group: &str, actor: Option<&str>) -> Result<(), RpcError> {
        let max = crate::cluster::membership::hosting::MAX_NAME;
        if group.is_empty() || group.len() > max || group.contains('/') {
            return Err(RpcError::BadArguments {
                method: group.to_owned(),
                detail: format!("a group is named by 1 to {max} characters without `/`"),
            });
        }
        {
            let mut groups = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
            let entry = (group.to_owned(), actor.map(str::to_owned));
            if !groups.contains(&entry) {
                groups.push(entry);
            }
        }
        self.publish().await
    }

    /// Leaves `group` and tells the cluster.
    pub(crate) async fn leave_group(
        &self,
        group: &str,
        actor: Option<&str>,
    ) -> Result<(), RpcError> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(g, a)| !(g == group && a.as_deref() == actor));
        self.publish().await
    }

    /// Every activation on this node, in (type, key) order (`Node::activations`: a program
    /// asking its own node; over the network, [`Actors::activations`] pages).
    pub(crate) fn all_activations(&self) -> Vec<Activation> {
        let mut all: Vec<Activation> = (self.inner.types.iter())
            .flat_map(|t| {
                let kind = t.key().clone();
                t.value().keys().into_iter().map(move |key| Activation {
                    kind: kind.clone(),
                    key: key.to_string(),
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
        all
    }

    /// A page of this node's activations in (type, key) order: at most `limit` of those
    /// after `after`, and how many there are in all. Memory is bounded by `limit`, not by
    /// the table: the smallest entries are kept in a heap as the table is walked.
    pub(crate) fn activations(&self, limit: usize, after: Option<&(String, String)>) -> Page {
        use std::collections::BinaryHeap;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut count = 0;
        let mut page: BinaryHeap<(String, Arc<str>)> = BinaryHeap::new();
        for t in self.inner.types.iter() {
            let kind = t.key();
            for key in t.value().keys() {
                count += 1;
                let later = after.is_none_or(|(k, a)| (kind.as_str(), &*key) > (k, a));
                let smaller = page.len() < limit
                    || page.peek().is_some_and(|(k, top)| (kind, &key) < (k, top));
                if later && smaller {
                    page.push((kind.clone(), key));
                    if page.len() > limit {
                        page.pop();
                    }
                }
            }
        }
        let activations: Vec<Activation> = (page.into_sorted_vec().into_iter())
            .map(|(kind, key)| Activation {
                kind,
                key: key.to_string(),
            })
            .collect();
        let next = (activations.len() == limit)
            .then(|| activations.last().map(|a| (a.kind.clone(), a.key.clone())))
            .flatten();
        Page {
            count,
            activations,
            next,
        }
    }

    /// Activations per type, for metrics and the dashboard.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    pub(crate) fn counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = self
            .inner
            .types
            .iter()
            .map(|t| (t.key().clone(), t.value().active()))
            .collect();
        counts.sort();
        counts
    }

    /// Hands activations over as the view changes, and keeps singletons running on their
    /// owner, until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut changes = self.inner.ctx.directory.changes();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
            // A burst of changes (a join storm) is handled once.
            tokio::time::sleep(Duration::from_millis(10)).await;
            changes.borrow_and_update();
            for t in self.inner.types.iter() {
                t.value().rebalance();
                t.value().ensure_singleton();
            }
        }
        // The node stops: activations still running end (their hooks run).
        for t in self.inner.types.iter() {
            t.value().stop_all();
        }
    }

    /// Stops new activations and ends every activation here (save hooks run), so the next
    /// owners load what this node saved. Called before the node says goodbye.
    pub(crate) async fn close(&self) {
        self.inner.ctx.closing.store(true, Ordering::SeqCst);
        let types: Vec<Arc<dyn Hosted>> =
            self.inner.types.iter().map(|t| t.value().clone()).collect();
        for t in types {
            t.leave_all().await;
        }
    }

    fn register_methods(&self) {
        reminders::register(&self.inner.handlers, &self.inner.ctx);
        let weak = Arc::downgrade(&self.inner);
        self.inner
            .handlers
            .register_async(RELEASE, move |(kind, key): (String, String)| {
                let inner = weak.upgrade();
                async move {
                    let hosted = inner.and_then(|i| i.types.get(&kind).map(|t| t.value().clone()));
                    // Not hosted here: nothing to let go.
                    let refusal = match hosted {
                        Some(t) => t.release(&key).await,
                        None => None,
                    };
                    Ok::<Option<String>, String>(refusal)
                }
            })
            .internal()
            .params(&["type", "key"])
            .help("system.actors.release(type, key) -> refusal: the new owner of a virtual actor asks the previous one to deactivate it; null when done, else why not yet (node-only)");
        for (name, all) in [("system.group.any", false), ("system.group.all", true)] {
            let routed = groups::Routed {
                ctx: self.inner.ctx.clone(),
                home: Arc::downgrade(&self.inner),
                all,
            };
            let signature =
                crate::handlers::signature::Signature::of::<serde_json::Value, serde_json::Value>();
            let help = if all {
                "system.group.all/GROUP/METHOD(args...) -> [{node, actor, result | error}]: calls METHOD on every live member of GROUP (JSON callers)"
            } else {
                "system.group.any/GROUP/METHOD(args...) -> result: calls METHOD on one live member of GROUP"
            };
            self.inner
                .handlers
                .insert(name, Arc::new(routed), signature)
                .help(help);
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner
            .handlers
            .register_fn("system.actors", move |(): ()| {
                weak.upgrade()
                    .map(|inner| Actors { inner }.activations(MAX_PAGE, None).activations)
                    .unwrap_or_default()
            })
            .help("system.actors() -> [{type, key}]: the virtual-actor activations living on this node, the first 1000 in (type, key) order (system.actors.page for the rest)");
        let weak = Arc::downgrade(&self.inner);
        self.inner
            .handlers
            .register_fn(
                "system.actors.page",
                move |(limit, after): (usize, Option<(String, String)>)| {
                    (weak.upgrade())
                        .map(|inner| Actors { inner }.activations(limit, after.as_ref()))
                        .unwrap_or_default()
                },
            )
            .params(&["limit", "after"])
            .help("system.actors.page(limit, after) -> {count, activations, next}: at most `limit` (up to 1000) activations after `after` ([type, key], or null for the first page), in (type, key) order, how many there are in all, and the `after` of the next page");
        let weak = Arc::downgrade(&self.inner);
        self.inner
            .handlers
            .register_fn(OWNER, move |(kind, key): (String, String)| {
                let inner = weak.upgrade()?;
                ActorRef::new(inner.ctx.clone(), &kind, &key).owner()
            })
            .params(&["type", "key"])
            .help("system.actors.owner(type, key) -> name | null: the member that owns the virtual actor TYPE/KEY in this node's view");
    }
}
