//! How a [`Peer`] opens streams: the server, client and bidirectional shapes, the JSON
//! form the CLI uses, and the declared forms the clients of `service!` call (each open
//! carrying the method's fingerprint).

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ItemSink, ItemStream, StreamOptions, StreamReply};
use crate::client::Peer;
use crate::error::RpcError;
use crate::handlers::MethodInfo;
use crate::link::Open;
use crate::wire::Encoding;

/// What a stream is opened as: the method, how items are encoded, the caller's
/// fingerprint of it (declared methods), its options.
struct Opening<'a> {
    method: &'a str,
    encoding: Encoding,
    signature: Option<u64>,
    options: StreamOptions,
}

impl<'a> Opening<'a> {
    fn bincode(method: &'a str, options: StreamOptions) -> Self {
        Opening {
            method,
            encoding: Encoding::Bincode,
            signature: None,
            options,
        }
    }

    fn declared(info: &'static MethodInfo) -> Self {
        Opening {
            signature: Some(info.fingerprint),
            ..Opening::bincode(info.name, StreamOptions::default())
        }
    }
}

impl Peer {
    /// Opens a stream; with `upload`, the sink uploads (otherwise the upload ends at once
    /// and the sink is useless).
    fn open<U, T>(
        &self,
        how: Opening<'_>,
        args: &(impl Serialize + ?Sized),
        upload: bool,
    ) -> Result<(ItemSink<U>, ItemStream<T>), RpcError> {
        let method = how.method;
        if self.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RpcError::Shutdown(format!(
                "this node is shutting down; `{method}` was not opened"
            )));
        }
        let open = Open {
            method,
            encoding: how.encoding,
            timeout: how.options.timeout,
            signature: how.signature,
            window: how.options.window,
            upload,
        };
        let (down, up) = self.conn.open_stream(open, args)?;
        let idle = how.options.idle.unwrap_or(Some(self.default_timeout));
        let sink = ItemSink {
            up,
            method: method.to_owned(),
            _item: PhantomData,
        };
        Ok((sink, ItemStream::new(down, idle)))
    }

    /// A server stream: what [`Peer::call_stream`] returns, an open error first if any.
    fn server<T>(&self, how: Opening<'_>, args: &(impl Serialize + ?Sized)) -> ItemStream<T> {
        match self.open::<(), T>(how, args, false) {
            Ok((_sink, items)) => items,
            Err(e) => ItemStream::failed(e),
        }
    }

    /// Opens the server stream `method(args)`: its items as they come.
    pub fn call_stream<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> ItemStream<T> {
        self.call_stream_with(method, args, StreamOptions::default())
    }

    /// [`Peer::call_stream`] with options.
    pub fn call_stream_with<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> ItemStream<T> {
        self.server(Opening::bincode(method, options), &args)
    }

    /// Opens the client stream `method(args)`: upload items through the sink, then await
    /// the reply.
    ///
    /// # Errors
    /// If the stream cannot be opened (link closed, arguments too large).
    pub fn client_stream<U: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> Result<(ItemSink<U>, StreamReply<R>), RpcError> {
        let (sink, items) = self.open(Opening::bincode(method, options), &args, true)?;
        Ok((sink, StreamReply::of(items)))
    }

    /// Opens the bidirectional stream `method(args)`: upload through the sink while
    /// reading the callee's items.
    ///
    /// # Errors
    /// If the stream cannot be opened (link closed, arguments too large).
    pub fn bidi_stream<U: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> Result<(ItemSink<U>, ItemStream<T>), RpcError> {
        self.open(Opening::bincode(method, options), &args, true)
    }

    /// Opens any stream with JSON arguments and JSON items (the CLI, gateways): the
    /// callee's shape decides what flows; a callee that reads no upload grants the sink no
    /// room ([`ItemSink::ready`] never resolves).
    ///
    /// # Errors
    /// If the stream cannot be opened.
    pub fn stream_json<A: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
        options: StreamOptions,
    ) -> Result<(ItemSink<serde_json::Value>, ItemStream<serde_json::Value>), RpcError> {
        let how = Opening {
            encoding: Encoding::Json,
            ..Opening::bincode(method, options)
        };
        self.open(how, args, true)
    }
}

/// What the clients [`crate::service!`] generates call: each open carries the method's
/// fingerprint, as `call_declared` does.
impl Peer {
    #[doc(hidden)]
    pub fn stream_declared<A: Serialize, T: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> ItemStream<T> {
        self.server(Opening::declared(info), args)
    }

    #[doc(hidden)]
    pub fn client_stream_declared<A: Serialize, U: Serialize, R: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> Result<(ItemSink<U>, StreamReply<R>), RpcError> {
        let (sink, items) = self.open(Opening::declared(info), args, true)?;
        Ok((sink, StreamReply::of(items)))
    }

    #[doc(hidden)]
    pub fn bidi_stream_declared<A: Serialize, U: Serialize, T: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> Result<(ItemSink<U>, ItemStream<T>), RpcError> {
        self.open(Opening::declared(info), args, true)
    }
}
