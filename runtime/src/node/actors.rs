//! The node's face for location-transparent actors: declaring virtual-actor types and
//! singletons, references to them, process groups and monitors. The work is done by the
//! actors layer (`crate::actors`); this file only hands it the node's parts.

use std::future::Future;

use super::Node;
use crate::actors::{Activation, ActorRef, Down, Group, Monitored, VirtualBuilder};
use crate::RpcError;

impl Node {
    /// Declares a virtual-actor type (Orleans' grain): one activation per key, created on
    /// its first call on the member that owns the key, with state from `factory(key)`.
    /// Every node that starts the type may host it. Methods are added on the builder and
    /// called through [`Node::actor_ref`], or as `type.method/KEY` by any caller.
    ///
    /// ```no_run
    /// # async fn demo(node: meshrpc::Node) -> Result<(), meshrpc::RpcError> {
    /// node.virtual_actor("vcounter", |_key: &str| 0i64)
    ///     .method("incr", |n: &mut i64, by: i64| { *n += by; *n })
    ///     .method("get", |n: &mut i64, (): ()| *n)
    ///     .start()
    ///     .await?;
    /// let n: i64 = node.actor_ref("vcounter", "user-42").call("incr", 1).await?;
    /// # Ok(()) }
    /// ```
    pub fn virtual_actor<S: Send + 'static>(
        &self,
        kind: &str,
        factory: impl Fn(&str) -> S + Send + Sync + 'static,
    ) -> VirtualBuilder<S> {
        let mailbox = self.core.config.mailbox;
        VirtualBuilder::new(self.core.actors.clone(), kind, factory, mailbox)
    }

    /// Declares a cluster singleton: a virtual-actor type with one key that runs (never
    /// idles out) on the member that owns it, and moves when that member goes. Reach it
    /// with [`Node::singleton_ref`].
    pub fn singleton<S: Send + 'static>(
        &self,
        name: &str,
        factory: impl Fn() -> S + Send + Sync + 'static,
    ) -> VirtualBuilder<S> {
        self.virtual_actor(name, move |_: &str| factory())
            .never_idle()
    }

    /// The virtual actor `kind`/`key`, wherever it lives.
    pub fn actor_ref(&self, kind: &str, key: &str) -> ActorRef {
        ActorRef::new(self.core.actors.ctx().clone(), kind, key)
    }

    /// The singleton `name`, wherever it runs.
    pub fn singleton_ref(&self, name: &str) -> ActorRef {
        self.actor_ref(name, crate::actors::hosted::SINGLETON_KEY)
    }

    /// The virtual-actor activations living on this node now.
    pub fn activations(&self) -> Vec<Activation> {
        self.core.actors.all_activations()
    }

    /// The process group `name`, as this node sees it.
    pub fn group(&self, name: &str) -> Group {
        Group::new(self.core.actors.ctx().clone(), name)
    }

    /// Joins group `name`: the group's calls reach this node's methods.
    ///
    /// # Errors
    /// If what this node belongs to no longer fits in one membership datagram.
    pub async fn join_group(&self, name: &str) -> Result<(), RpcError> {
        self.core.actors.join(name, None).await
    }

    /// Joins group `name` as the actor `actor` of this node: the group's calls for `m`
    /// reach `actor.m`.
    ///
    /// # Errors
    /// As [`Node::join_group`].
    pub async fn join_group_as(&self, name: &str, actor: &str) -> Result<(), RpcError> {
        self.core.actors.join(name, Some(actor)).await
    }

    /// Leaves group `name` (as the node, or as `actor`).
    ///
    /// # Errors
    /// If membership has stopped.
    pub async fn leave_group(&self, name: &str, actor: Option<&str>) -> Result<(), RpcError> {
        self.core.actors.leave_group(name, actor).await
    }

    /// A future that resolves, with the reason, when `target` is gone: a node `down` or
    /// `left`, or a virtual actor whose node went or whose key moved.
    pub fn monitor(&self, target: Monitored) -> impl Future<Output = Down> + Send + 'static {
        crate::actors::monitor::watch(self.core.actors.ctx().clone(), target)
    }
}
