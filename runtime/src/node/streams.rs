//! The node's face for streams: registering the three shapes of streaming method and
//! opening streams on peers by target. The work is done by the handlers
//! (`crate::handlers`, which run each stream as a task) and the caller's side
//! (`crate::client`, over the link's credit).

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Node;
use crate::handlers::{Items, Registered};
use crate::{ItemSink, ItemStream, Peer, RpcError, StreamOptions, StreamReply, Target};

impl Node {
    /// Registers a server stream: `f(args)` returns the items, which the caller reads as
    /// they come ([`Peer::call_stream`], or `meshrpc call`, which prints one JSON line
    /// each). Each stream runs as a task that sends an item whenever the caller has room
    /// for one, and stops when the caller drops the stream.
    ///
    /// ```no_run
    /// # fn demo(node: meshrpc::Node) {
    /// node.register_stream("count", |n: u64| futures_util::stream::iter(0..n));
    /// # }
    /// ```
    pub fn register_stream<A, T, S, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        S: Stream<Item = T> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        self.register_try_stream(name, move |args: A| {
            f(args).map(Ok::<T, std::convert::Infallible>)
        })
    }

    /// Registers a server stream whose items may fail: an `Err` item ends the stream, and
    /// the caller reads it as an `application` error after the items before it.
    pub fn register_try_stream<A, T, E, S, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.core.handlers.register_try_stream(name, f)
    }

    /// Registers a client stream: `f(args, items)` reads what the caller uploads
    /// ([`Peer::client_stream`]) and answers once, like an async function.
    pub fn register_client_stream<A, U, R, E, F, Fut>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A, Items<U>) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.core.handlers.register_client_stream(name, f)
    }

    /// Registers a bidirectional stream: `f(args, items)` returns a stream of its own while
    /// the caller uploads ([`Peer::bidi_stream`]).
    pub fn register_bidi_stream<A, U, T, E, S, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A, Items<U>) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.core.handlers.register_bidi_stream(name, f)
    }

    /// Opens the server stream `method(args)` on a peer; see [`Peer::call_stream`]. A peer
    /// that cannot be reached is the stream's only item, an error.
    pub async fn call_stream<T: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
    ) -> ItemStream<T> {
        self.call_stream_with(to, method, args, StreamOptions::default())
            .await
    }

    /// [`Node::call_stream`] with options.
    pub async fn call_stream_with<T: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> ItemStream<T> {
        let to = to.into();
        let opened = self
            .stream_link(&to, |peer| {
                let mut items = peer.call_stream_with(method, &args, options);
                match items.open_error() {
                    Some(e) => Err(e),
                    None => Ok(items),
                }
            })
            .await;
        opened.unwrap_or_else(ItemStream::failed)
    }

    /// Opens the client stream `method(args)` on a peer; see [`Peer::client_stream`].
    ///
    /// # Errors
    /// If the peer cannot be reached or the stream cannot be opened.
    pub async fn client_stream<U: Serialize, R: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> Result<(ItemSink<U>, StreamReply<R>), RpcError> {
        let to = to.into();
        self.stream_link(&to, |peer| peer.client_stream(method, &args, options))
            .await
    }

    /// Opens the bidirectional stream `method(args)` on a peer; see [`Peer::bidi_stream`].
    ///
    /// # Errors
    /// If the peer cannot be reached or the stream cannot be opened.
    pub async fn bidi_stream<U: Serialize, T: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> Result<(ItemSink<U>, ItemStream<T>), RpcError> {
        let to = to.into();
        self.stream_link(&to, |peer| peer.bidi_stream(method, &args, options))
            .await
    }

    /// Opens a stream on the link to `to`, again on a new link if the first had just
    /// closed without the open being read, the peer staying ([`Connection::may_resend`]).
    async fn stream_link<T>(
        &self,
        to: &Target,
        open: impl Fn(&Peer) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let peer = self.peer(to.clone()).await?;
        match open(&peer) {
            Err(e) if peer.conn.may_resend(&e) => open(&self.peer(to.clone()).await?),
            other => other,
        }
    }
}
