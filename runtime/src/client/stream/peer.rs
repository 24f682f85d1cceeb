//! How a [`Peer`] opens streams: the server, client and bidirectional shapes, the JSON
//! form the CLI uses, and the declared forms the clients of `service!` call (each open
//! carrying the method's fingerprint).

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{retype, ItemSink, ItemStream, StreamOptions, StreamReply};
use crate::client::Peer;
use crate::handlers::MethodInfo;
use crate::link::{Open, Upstream};
use crate::wire::Encoding;
use crate::RpcError;

impl Peer {
    fn open(
        &self,
        method: &str,
        args: &(impl Serialize + ?Sized),
        options: StreamOptions,
        upload: bool,
        encoding: Encoding,
        signature: Option<u64>,
    ) -> Result<(ItemStream<()>, Upstream), RpcError> {
        if self.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RpcError::Shutdown(format!(
                "this node is shutting down; `{method}` was not opened"
            )));
        }
        let open = Open {
            method,
            encoding,
            timeout: options.timeout,
            signature,
            window: options.window,
            upload,
        };
        let (down, up) = self.conn.open_stream(open, args)?;
        let idle = options.idle.unwrap_or(Some(self.default_timeout));
        Ok((ItemStream::new(down, idle), up))
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
        match self.open(method, &args, options, false, Encoding::Bincode, None) {
            Ok((items, _up)) => retype(items),
            Err(e) => ItemStream::failed(e),
        }
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
        let (items, up) = self.open(method, &args, options, true, Encoding::Bincode, None)?;
        let sink = ItemSink {
            up,
            method: method.to_owned(),
            _item: PhantomData,
        };
        let reply = StreamReply {
            items,
            _result: PhantomData,
        };
        Ok((sink, reply))
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
        let (items, up) = self.open(method, &args, options, true, Encoding::Bincode, None)?;
        let sink = ItemSink {
            up,
            method: method.to_owned(),
            _item: PhantomData,
        };
        Ok((sink, retype(items)))
    }
}

impl Peer {
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
        let (items, up) = self.open(method, args, options, true, Encoding::Json, None)?;
        let sink = ItemSink {
            up,
            method: method.to_owned(),
            _item: PhantomData,
        };
        Ok((sink, retype(items)))
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
        let options = StreamOptions::default();
        match self.open(
            info.name,
            args,
            options,
            false,
            Encoding::Bincode,
            Some(info.fingerprint),
        ) {
            Ok((items, _up)) => retype(items),
            Err(e) => ItemStream::failed(e),
        }
    }

    #[doc(hidden)]
    pub fn client_stream_declared<A: Serialize, U: Serialize, R: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> Result<(ItemSink<U>, StreamReply<R>), RpcError> {
        let options = StreamOptions::default();
        let (items, up) = self.open(
            info.name,
            args,
            options,
            true,
            Encoding::Bincode,
            Some(info.fingerprint),
        )?;
        let sink = ItemSink {
            up,
            method: info.name.to_owned(),
            _item: PhantomData,
        };
        let reply = StreamReply {
            items,
            _result: PhantomData,
        };
        Ok((sink, reply))
    }

    #[doc(hidden)]
    pub fn bidi_stream_declared<A: Serialize, U: Serialize, T: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> Result<(ItemSink<U>, ItemStream<T>), RpcError> {
        let options = StreamOptions::default();
        let (items, up) = self.open(
            info.name,
            args,
            options,
            true,
            Encoding::Bincode,
            Some(info.fingerprint),
        )?;
        let sink = ItemSink {
            up,
            method: info.name.to_owned(),
            _item: PhantomData,
        };
        Ok((sink, retype(items)))
    }
}
