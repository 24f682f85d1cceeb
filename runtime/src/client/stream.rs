//! The caller's side of streams: [`ItemStream`] (the callee's items, decoded, then its end),
//! [`ItemSink`] (items this side uploads) and [`StreamReply`] (a client stream's one
//! result), opened through a [`Peer`] with [`StreamOptions`].
//!
//! A stream ends with the callee's reply, an error, or the caller letting go: dropping the
//! `ItemStream` (or the `StreamReply`) cancels the stream and the callee's task stops;
//! dropping the `ItemSink` ends the upload cleanly.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

mod peer;
use crate::error::RpcError;
use crate::link::{Downstream, Next, Open, SendError, Upstream};
use crate::wire::codec::decode_result;
use crate::wire::Encoding;

/// How a stream is opened.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// A deadline for the whole stream; default none (a feed may run as long as it is read).
    pub timeout: Option<Duration>,
    /// How long the consumer may wait for the next item before the stream ends with
    /// `timeout`; default: the node's (or client's) call timeout. `None`: no limit.
    pub idle: Option<Option<Duration>>,
    /// How many items the callee may send ahead of the consumer (default 64): memory per
    /// stream is at most this many items on each side.
    pub window: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            timeout: None,
            idle: None,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Items a callee may send ahead of its consumer, unless the options say otherwise.
const DEFAULT_WINDOW: u32 = 64;

impl StreamOptions {
    /// With a deadline for the whole stream.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// With this idle limit (`None`: wait for the next item as long as it takes).
    pub fn idle(mut self, idle: Option<Duration>) -> Self {
        self.idle = Some(idle);
        self
    }

    /// With this window, in items (at least 1).
    pub fn window(mut self, items: u32) -> Self {
        self.window = items.max(1);
        self
    }
}

/// The items of a stream, as they come: `Ok` items in order, then the end (`None`), or one
/// `Err` saying why the stream stopped early (the callee's error, `timeout`,
/// `disconnected`...) and then the end.
pub struct ItemStream<T> {
    /// Yielded before anything else: why the stream could not be opened, or an item
    /// already read (a virtual actor's ref looks at the first before it settles).
    front: Option<Result<T, RpcError>>,
    down: Option<Downstream>,
    /// The callee's reply, once the stream ended cleanly.
    reply: Option<(Encoding, bytes::Bytes)>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.down {
            Some(down) => write!(f, "ItemStream({})", down.method()),
            None => f.write_str("ItemStream(ended)"),
        }
    }
}

impl<T> ItemStream<T> {
    fn new(down: Downstream, idle: Option<Duration>) -> Self {
        let idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
        ItemStream {
            front: None,
            down: Some(down),
            reply: None,
            idle,
            _item: PhantomData,
        }
    }

    /// A stream that ends at once with `error` (it could not be opened).
    pub(crate) fn failed(error: RpcError) -> Self {
        ItemStream {
            front: Some(Err(error)),
            down: None,
            reply: None,
            idle: None,
            _item: PhantomData,
        }
    }

    /// Puts an item read from the stream back in front of it.
    pub(crate) fn unread(&mut self, item: Result<T, RpcError>) {
        self.front = Some(item);
    }

    /// Opens a stream on `conn` (what `Peer` does, for the layers that hold a link).
    pub(crate) fn open(
        conn: &crate::link::Connection,
        method: &str,
        args: &(impl Serialize + ?Sized),
        options: StreamOptions,
        default_idle: Duration,
    ) -> Self {
        let open = Open {
            method,
            encoding: Encoding::Bincode,
            timeout: options.timeout,
            signature: None,
            window: options.window,
            upload: false,
        };
        match conn.open_stream(open, args) {
            Ok((down, _up)) => ItemStream::new(down, options.idle.unwrap_or(Some(default_idle))),
            Err(e) => ItemStream::failed(e),
        }
    }

    /// The next raw item or the end, enforcing the idle limit.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let Some(down) = self.down.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(next) = down.poll_next(cx) {
            if let Some((after, sleep)) = self.idle.as_mut() {
                sleep.as_mut().reset(Instant::now() + *after);
            }
            if matches!(next, Next::End(_)) {
                self.down = None;
            }
            return Poll::Ready(Some(next));
        }
        if let Some((after, sleep)) = self.idle.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                let method = down.method().to_owned();
                // Dropping the half cancels the stream at the callee.
                self.down = None;
                return Poll::Ready(Some(Next::End(Err(RpcError::Timeout {
                    method,
                    after: *after,
                }))));
            }
        }
        Poll::Pending
    }
}

impl<T> ItemStream<T> {
    /// Once the stream has ended cleanly: the callee's reply, decoded (`()` for a server or
    /// bidirectional stream; some callees end a stream with a summary).
    pub fn reply<R: DeserializeOwned>(&self) -> Option<Result<R, RpcError>> {
        let (encoding, body) = self.reply.as_ref()?;
        Some(
            decode_result(*encoding, body).map_err(|e| {
                RpcError::Protocol(format!("the stream's reply does not decode: {e}"))
            }),
        )
    }
}

impl<T: DeserializeOwned> Stream for ItemStream<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(front) = self.front.take() {
            return Poll::Ready(Some(front));
        }
        let encoding = self.down.as_ref().map(Downstream::encoding);
        let method = self.down.as_ref().map(|d| d.method().to_owned());
        match std::task::ready!(self.poll_raw(cx)) {
            None => Poll::Ready(None),
            Some(Next::End(Ok(reply))) => {
                self.reply = Some(reply);
                Poll::Ready(None)
            }
            Some(Next::End(Err(e))) => Poll::Ready(Some(Err(e))),
            Some(Next::Item(bytes)) => {
                let (encoding, method) = (
                    encoding.unwrap_or(Encoding::Bincode),
                    method.unwrap_or_default(),
                );
                match decode_result::<T>(encoding, &bytes) {
                    Ok(item) => Poll::Ready(Some(Ok(item))),
                    Err(e) => {
                        self.down = None; // cancels: the rest would not decode either
                        Poll::Ready(Some(Err(RpcError::Protocol(format!(
                            "an item of `{method}` does not decode as the expected type: {e}"
                        )))))
                    }
                }
            }
        }
    }
}

impl<T> Unpin for ItemStream<T> {}

/// Items this side uploads to a client or bidirectional stream. Dropping it, or
/// [`ItemSink::finish`], ends the upload; the callee then sees its items end cleanly.
pub struct ItemSink<T> {
    up: Upstream,
    method: String,
    _item: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for ItemSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ItemSink({})", self.method)
    }
}

impl<T: Serialize> ItemSink<T> {
    /// Sends one item, waiting while the callee has no room for it (its credit).
    ///
    /// # Errors
    /// `disconnected` once the stream is over (the callee answered or went away: read the
    /// stream for why); `frame_too_large` or `bad_arguments` for an item that cannot be
    /// sent (the stream goes on).
    pub async fn send(&self, item: &T) -> Result<(), RpcError> {
        match self.up.send(item).await {
            Ok(()) => Ok(()),
            Err(SendError::Item(e)) => Err(e),
            Err(SendError::Closed) => Err(RpcError::Disconnected {
                peer: "(the stream is over)".into(),
                method: self.method.clone(),
            }),
        }
    }

    /// Waits until the callee has room for an item (without sending one): a callee that
    /// reads no upload never has.
    ///
    /// # Errors
    /// `disconnected` once the stream is over.
    pub async fn ready(&self) -> Result<(), RpcError> {
        self.up.ready().await.map_err(|_| RpcError::Disconnected {
            peer: "(the stream is over)".into(),
            method: self.method.clone(),
        })
    }

    /// Ends the upload.
    pub fn finish(self) {
        self.up.finish();
    }
}

/// A client stream's result: resolves once the callee answers, after the upload ends.
pub struct StreamReply<R> {
    items: ItemStream<()>,
    _result: PhantomData<fn() -> R>,
}

impl<R> StreamReply<R> {
    /// The reply that ends `items` (a client stream sends no items, only its result).
    fn of(items: ItemStream<()>) -> Self {
        StreamReply {
            items,
            _result: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> Future for StreamReply<R> {
    type Output = Result<R, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let method = self
            .items
            .down
            .as_ref()
            .map(|d| d.method().to_owned())
            .unwrap_or_default();
        loop {
            match std::task::ready!(self.items.poll_raw(cx)) {
                // A client stream sends no items; any that come are not its result.
                Some(Next::Item(_)) => continue,
                Some(Next::End(Ok((encoding, body)))) => {
                    return Poll::Ready(crate::client::decode_typed(&method, encoding, &body))
                }
                Some(Next::End(Err(e))) => return Poll::Ready(Err(e)),
                None => {
                    return Poll::Ready(Err(RpcError::Protocol(format!(
                        "the reply of `{method}` was already taken"
                    ))))
                }
            }
        }
    }
}
