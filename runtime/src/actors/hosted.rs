//! What the actors layer needs of each hosted type, whatever its state type: listing,
//! hand-over, singletons, release and shutdown.

use std::sync::Arc;

use super::activation::Kind;

/// A hosted virtual-actor type, its state type erased.
pub(crate) trait Hosted: Send + Sync + 'static {
    fn keys(&self) -> Vec<Arc<str>>;
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    fn active(&self) -> usize;
    fn rebalance(&self);
    /// Whether this node owns `key` in its view.
    fn owns(&self, key: &str) -> bool;
    fn ensure_singleton(&self);
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>>;
    fn leave_all(&self) -> BoxFuture<'_, ()>;
    fn stop_all(&self);
    /// Each activation's key, with when it was last called.
    fn last_calls(&self) -> Vec<(tokio::time::Instant, Arc<str>)>;
    /// Deactivates these keys (the node holds too many activations).
    fn shed(&self, keys: &[Arc<str>]);
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The key a singleton lives under.
pub(crate) const SINGLETON_KEY: &str = "singleton";

impl<S: Send + 'static> Hosted for Arc<Kind<S>> {
    fn keys(&self) -> Vec<Arc<str>> {
        Kind::keys(self)
    }
    fn active(&self) -> usize {
        Kind::active(self)
    }
    fn rebalance(&self) {
        Kind::rebalance(self);
    }
    fn owns(&self, key: &str) -> bool {
        self.owner(key).is_some_and(|o| o.id == self.ctx.me)
    }
    fn ensure_singleton(&self) {
        if self.runs_always() {
            self.ensure(SINGLETON_KEY);
        }
    }
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(Kind::release(self, key))
    }
    fn stop_all(&self) {
        Kind::stop_all(self);
    }
    fn leave_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(Kind::leave_all(self))
    }
    fn last_calls(&self) -> Vec<(tokio::time::Instant, Arc<str>)> {
        Kind::last_calls(self)
    }
    fn shed(&self, keys: &[Arc<str>]) {
        Kind::shed(self, keys);
    }
}
