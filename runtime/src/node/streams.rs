//! The node's face for streams: registering the three shapes of streaming method. The work
//! is done by the handlers (`crate::handlers`, which run each stream as a task); callers
//! open streams on a [`crate::client::Peer`] (`crate::client`, over the link's credit).

use super::register::IntoStreamHandler;
use super::Node;
use crate::handlers::Registered;

impl Node {
    /// Registers a streaming method; the closure's shape decides which of the three it is
    /// (see [`IntoStreamHandler`]):
    ///
    /// - `|args| stream` — a server stream: the caller reads the items as they come
    ///   ([`Peer::call_stream`](crate::client::Peer::call_stream), or `meshrpc call`, which prints one JSON line each);
    /// - `|args, items: Items<U>| async move { answer }` — a client stream: it reads what the
    ///   caller uploads ([`Peer::client_stream`](crate::client::Peer::client_stream)) and answers once;
    /// - `|args, items: Items<U>| stream` — both ways at once ([`Peer::bidi_stream`](crate::client::Peer::bidi_stream)).
    ///
    /// An item (or answer) that is an `Err` ends the stream with that `application` error,
    /// after the items before it. Each stream runs as a task that sends an item whenever the
    /// caller has room for one, and stops when the caller drops it.
    ///
    /// ```no_run
    /// # fn demo(node: meshrpc::Node) {
    /// node.register_stream("count", |n: u64| futures_util::stream::iter(0..n));
    /// # }
    /// ```
    pub fn register_stream<M>(&self, name: &str, f: impl IntoStreamHandler<M>) -> Registered<'_> {
        f.register(self, name)
    }
}
