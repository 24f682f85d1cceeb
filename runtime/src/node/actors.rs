//! The node's face for location-transparent actors: declaring virtual-actor types (and
//! singletons, a one-key type), references to them, process groups and monitors. The work is done by the
//! actors layer (`crate::actors`); this file only hands it the node's parts.

use std::future::Future;

use super::Node;
use crate::actors::{Activation, ActorRef, Down, Group, Monitored, VirtualBuilder};

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

    /// The virtual actor `kind`/`key`, wherever it lives (a singleton's key is
    /// [`ActorRef::SINGLETON`]).
    pub fn actor_ref(&self, kind: &str, key: &str) -> ActorRef {
        ActorRef::new(self.core.actors.ctx().clone(), kind, key)
    }

    /// The virtual-actor activations living on this node now, in (type, key) order.
    pub fn activations(&self) -> Vec<Activation> {
        self.core.actors.all_activations()
    }

    /// The process group `name`, as this node sees it: join it, leave it, call its members.
    pub fn group(&self, name: &str) -> Group {
        self.core.actors.group(name)
    }

    /// A future that resolves, with the reason, when `target` is gone: a node `down` or
    /// `left`, or a virtual actor whose node went or whose key moved.
    pub fn monitor(&self, target: Monitored) -> impl Future<Output = Down> + Send + 'static {
        crate::actors::monitor::watch(self.core.actors.ctx().clone(), target)
    }
}
