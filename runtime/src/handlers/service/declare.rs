//! The [`service!`](crate::service) macro: parses a service definition, method by method
//! (plain, async, and the three streaming shapes), into records that one expansion turns
//! into the server trait, the `…Server` registration and the typed `…Client`.

/// Declares a service: a server trait, a `…Server` wrapper to register an implementation
/// with [`crate::node::Node::serve`], and a typed `…Client`.
///
/// ```
/// meshrpc::service! {
///     /// The calculator of the Python tutorial.
///     pub service Calc {
///         /// a + b
///         fn add(a: i64, b: i64) -> i64;
///         /// x * x, or an error when it overflows.
///         fn square(x: i64) -> Result<i64, String>;
///         /// Waits `ms` milliseconds.
///         async fn sleep(ms: u64) -> u64;
///     }
/// }
///
/// struct CalcImpl;
///
/// impl Calc for CalcImpl {
///     fn add(&self, a: i64, b: i64) -> i64 {
///         a + b
///     }
///     fn square(&self, x: i64) -> Result<i64, String> {
///         x.checked_mul(x).ok_or_else(|| "overflow".to_owned())
///     }
///     async fn sleep(&self, ms: u64) -> u64 {
///         tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
///         ms
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let server = meshrpc::Node::builder("server").start().await?;
/// server.serve(CalcServer::new(CalcImpl));
/// let client = meshrpc::Node::builder("client").start().await?;
/// let calc = CalcClient::new(client.peer(server.addr()).await?);
/// assert_eq!(calc.add(2, 3).await?, 5);
/// assert_eq!(CalcClient::ADD.signature(), "add(a: i64, b: i64) -> i64");
/// # Ok(()) }
/// ```
///
/// Methods are `fn` (run inline on the reader: keep them quick) or `async fn` (a task per
/// call); a declared `Result<T, E>` makes `E` the caller's `application` error. Each method
/// is registered under its own name; its doc comment becomes `system.methodHelp`, and its
/// parameter names let JSON-RPC callers pass them by name.
///
/// Streaming methods (docs/STREAMS.md) say `stream<T>` where a stream flows:
///
/// | declared | implemented as | client method returns |
/// |---|---|---|
/// | `fn count(n: u64) -> stream<u64>;` | `fn count(&self, n: u64) -> BoxStream<u64>` | `ItemStream<u64>` |
/// | `fn lines(p: String) -> stream<Result<String, String>>;` | `-> BoxStream<Result<String, String>>` (an `Err` ends it) | `ItemStream<String>` |
/// | `fn sum(items: stream<i64>) -> i64;` | `async fn sum(&self, items: Items<i64>) -> i64` | `Result<(ItemSink<i64>, StreamReply<i64>), RpcError>` |
/// | `fn scan(items: stream<i64>, start: i64) -> stream<i64>;` | `fn scan(&self, items: Items<i64>, start: i64) -> BoxStream<i64>` | `Result<(ItemSink<i64>, ItemStream<i64>), RpcError>` |
///
/// The uploaded stream is always the first parameter.
#[macro_export]
macro_rules! service {
    (
        $(#[$attr:meta])*
        $vis:vis service $name:ident {
            $($methods:tt)*
        }
    ) => {
        $crate::__service_parse! { [$(#[$attr])*] $vis $name [] $($methods)* }
    };
}

/// One method at a time into a record `{ [docs] KIND name [params] ok [err] [upload] }`.
/// The streaming arms come first: `stream<T>` would otherwise parse as a type.
#[doc(hidden)]
#[macro_export]
macro_rules! __service_parse {
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($up:ident : stream<$upty:ty> $(, $p:ident : $pty:ty)* $(,)?) -> stream<Result<$ok:ty, $err:ty>>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] bidi $m [$($p : $pty),*] $ok [$err] [$up : $upty] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($up:ident : stream<$upty:ty> $(, $p:ident : $pty:ty)* $(,)?) -> stream<$ok:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] bidi $m [$($p : $pty),*] $ok [] [$up : $upty] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($up:ident : stream<$upty:ty> $(, $p:ident : $pty:ty)* $(,)?) -> Result<$ok:ty, $err:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] upload $m [$($p : $pty),*] $ok [$err] [$up : $upty] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($up:ident : stream<$upty:ty> $(, $p:ident : $pty:ty)* $(,)?) -> $ok:ty;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] upload $m [$($p : $pty),*] $ok [] [$up : $upty] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> stream<Result<$ok:ty, $err:ty>>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] server $m [$($p : $pty),*] $ok [$err] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> stream<$ok:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] server $m [$($p : $pty),*] $ok [] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> Result<$ok:ty, $err:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] $ok [$err] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> $ok:ty;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] $ok [] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?);
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] () [] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> Result<$ok:ty, $err:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] $ok [$err] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> $ok:ty;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] $ok [] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?);
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] () [] [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]) => {
        $crate::__service_expand! { [$($attr)*] $vis $name $($done)* }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_expand {
    ([$($attr:tt)*] $vis:vis $name:ident $({
        [$($doc:literal),*] $kind:ident $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$($err:ty)?] [$($up:ident : $upty:ty)?]
    })*) => {
        $crate::__private::paste! {
            $($attr)*
            $vis trait $name: ::core::marker::Send + ::core::marker::Sync + 'static {
                $( $crate::__service_method! { [$($doc),*] $kind $m [$($p : $pty),*] $ok [$($err)?] [$($up : $upty)?] } )*
            }

            #[doc = "Registers an implementation of [`" $name "`] with `Node::serve`."]
            $vis struct [<$name Server>]<T>(pub T);

            impl<T: $name> [<$name Server>]<T> {
                #[doc = "Wraps an implementation of [`" $name "`] for `Node::serve`."]
                $vis fn new(service: T) -> Self {
                    Self(service)
                }
            }

            impl<T: $name> $crate::service::Service for [<$name Server>]<T> {
                fn register(self, registry: &$crate::service::Registry<'_>) {
                    let service = ::std::sync::Arc::new(self.0);
                    $( $crate::__service_register! {
                        registry, service, [<$name Client>]::[<$m:upper>],
                        $kind $m [$($p : $pty),*] $ok [$($err)?] [$($up : $upty)?]
                    } )*
                    let _ = service;
                }
            }

            #[doc = "A typed client of [`" $name "`]: each call carries the method's fingerprint."]
            #[derive(Clone)]
            $vis struct [<$name Client>] {
                peer: $crate::Peer,
            }

            impl [<$name Client>] {
                $(
                    #[doc = "The declaration of `" $m "`."]
                    pub const [<$m:upper>]: $crate::service::MethodInfo = $crate::__service_info!(
                        $kind $m [$($p : $pty),*] $ok [$($upty)?] [$($doc),*]
                    );
                )*

                /// Every method of the service, in declaration order.
                pub const METHODS: &'static [&'static $crate::service::MethodInfo] = &[$(&Self::[<$m:upper>]),*];

                /// A client calling the service over `peer`'s link.
                $vis fn new(peer: impl ::core::convert::Into<$crate::Peer>) -> Self {
                    Self { peer: peer.into() }
                }

                /// The link this client calls over.
                $vis fn peer(&self) -> &$crate::Peer {
                    &self.peer
                }

                $(
                    $crate::__service_client! {
                        [$($doc),*] $vis $kind $m [$($p : $pty),*] $ok [$($upty)?] Self::[<$m:upper>]
                    }
                )*
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_info {
    (synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$($doc:literal),*]) => {
        $crate::__service_info!(@plain $m [$($p : $pty),*] $ok [$($doc),*])
    };
    (asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$($doc:literal),*]) => {
        $crate::__service_info!(@plain $m [$($p : $pty),*] $ok [$($doc),*])
    };
    (@plain $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$($doc:literal),*]) => {
        $crate::service::MethodInfo::new(
            ::core::stringify!($m),
            &[$($crate::service::Param { name: ::core::stringify!($p), ty: ::core::stringify!($pty) }),*],
            ::core::stringify!($ok),
            ::core::concat!("" $(, $doc, "\n")*),
        )
    };
    ($kind:ident $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$($upty:ty)?] [$($doc:literal),*]) => {
        $crate::service::MethodInfo::streaming(
            ::core::stringify!($m),
            &[$($crate::service::Param { name: ::core::stringify!($p), ty: ::core::stringify!($pty) }),*],
            $crate::__service_upload!($($upty)?),
            ::core::stringify!($ok),
            $crate::__service_streams!($kind),
            ::core::concat!("" $(, $doc, "\n")*),
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_upload {
    () => {
        ::core::option::Option::None
    };
    ($upty:ty) => {
        ::core::option::Option::Some(::core::stringify!($upty))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_streams {
    (upload) => {
        false
    };
    ($kind:ident) => {
        true
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_method {
    ([$($doc:literal),*] synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> $ok;
    };
    ([$($doc:literal),*] synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> ::core::result::Result<$ok, $err>;
    };
    ([$($doc:literal),*] asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> impl ::core::future::Future<Output = $ok> + ::core::marker::Send;
    };
    ([$($doc:literal),*] asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*)
            -> impl ::core::future::Future<Output = ::core::result::Result<$ok, $err>> + ::core::marker::Send;
    };
    ([$($doc:literal),*] server $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> $crate::stream::BoxStream<$ok>;
    };
    ([$($doc:literal),*] server $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> $crate::stream::BoxStream<::core::result::Result<$ok, $err>>;
    };
    ([$($doc:literal),*] upload $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$up:ident : $upty:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $up: $crate::stream::Items<$upty>, $($p: $pty),*)
            -> impl ::core::future::Future<Output = $ok> + ::core::marker::Send;
    };
    ([$($doc:literal),*] upload $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] [$up:ident : $upty:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $up: $crate::stream::Items<$upty>, $($p: $pty),*)
            -> impl ::core::future::Future<Output = ::core::result::Result<$ok, $err>> + ::core::marker::Send;
    };
    ([$($doc:literal),*] bidi $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$up:ident : $upty:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $up: $crate::stream::Items<$upty>, $($p: $pty),*) -> $crate::stream::BoxStream<$ok>;
    };
    ([$($doc:literal),*] bidi $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] [$up:ident : $upty:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $up: $crate::stream::Items<$upty>, $($p: $pty),*)
            -> $crate::stream::BoxStream<::core::result::Result<$ok, $err>>;
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_register {
    ($registry:ident, $service:ident, $info:path, synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {{
        let service = $service.clone();
        $registry.sync_method(&$info, move |($($p,)*): ($($pty,)*)| {
            ::core::result::Result::<$ok, ::core::convert::Infallible>::Ok(service.$m($($p),*))
        });
    }};
    ($registry:ident, $service:ident, $info:path, synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {{
        let service = $service.clone();
        $registry.sync_method(&$info, move |($($p,)*): ($($pty,)*)| service.$m($($p),*));
    }};
    ($registry:ident, $service:ident, $info:path, asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {{
        let service = $service.clone();
        $registry.async_method(&$info, move |($($p,)*): ($($pty,)*)| {
            let service = service.clone();
            async move {
                ::core::result::Result::<$ok, ::core::convert::Infallible>::Ok(service.$m($($p),*).await)
            }
        });
    }};
    ($registry:ident, $service:ident, $info:path, asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {{
        let service = $service.clone();
        $registry.async_method(&$info, move |($($p,)*): ($($pty,)*)| {
            let service = service.clone();
            async move { service.$m($($p),*).await }
        });
    }};
    ($registry:ident, $service:ident, $info:path, server $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] []) => {{
        let service = $service.clone();
        $registry.stream_method(&$info, move |($($p,)*): ($($pty,)*)| {
            $crate::__private::infallible(service.$m($($p),*))
        });
    }};
    ($registry:ident, $service:ident, $info:path, server $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] []) => {{
        let service = $service.clone();
        $registry.stream_method(&$info, move |($($p,)*): ($($pty,)*)| service.$m($($p),*));
    }};
    ($registry:ident, $service:ident, $info:path, upload $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$up:ident : $upty:ty]) => {{
        let service = $service.clone();
        $registry.upload_method(&$info, move |($($p,)*): ($($pty,)*), $up: $crate::stream::Items<$upty>| {
            let service = service.clone();
            async move {
                ::core::result::Result::<$ok, ::core::convert::Infallible>::Ok(service.$m($up, $($p),*).await)
            }
        });
    }};
    ($registry:ident, $service:ident, $info:path, upload $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] [$up:ident : $upty:ty]) => {{
        let service = $service.clone();
        $registry.upload_method(&$info, move |($($p,)*): ($($pty,)*), $up: $crate::stream::Items<$upty>| {
            let service = service.clone();
            async move { service.$m($up, $($p),*).await }
        });
    }};
    ($registry:ident, $service:ident, $info:path, bidi $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] [$up:ident : $upty:ty]) => {{
        let service = $service.clone();
        $registry.bidi_method(&$info, move |($($p,)*): ($($pty,)*), $up: $crate::stream::Items<$upty>| {
            $crate::__private::infallible(service.$m($up, $($p),*))
        });
    }};
    ($registry:ident, $service:ident, $info:path, bidi $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty] [$up:ident : $upty:ty]) => {{
        let service = $service.clone();
        $registry.bidi_method(&$info, move |($($p,)*): ($($pty,)*), $up: $crate::stream::Items<$upty>| {
            service.$m($up, $($p),*)
        });
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_client {
    ([$($doc:literal),*] $vis:vis server $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] $($info:tt)+) => {
        $(#[doc = $doc])*
        $vis fn $m(&self, $($p: $pty),*) -> $crate::stream::ItemStream<$ok> {
            self.peer.stream_declared(&$($info)+, &($($p,)*))
        }
    };
    ([$($doc:literal),*] $vis:vis upload $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$upty:ty] $($info:tt)+) => {
        $(#[doc = $doc])*
        $vis fn $m(&self, $($p: $pty),*) -> ::core::result::Result<
            ($crate::stream::ItemSink<$upty>, $crate::stream::StreamReply<$ok>),
            $crate::RpcError,
        > {
            self.peer.client_stream_declared(&$($info)+, &($($p,)*))
        }
    };
    ([$($doc:literal),*] $vis:vis bidi $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$upty:ty] $($info:tt)+) => {
        $(#[doc = $doc])*
        $vis fn $m(&self, $($p: $pty),*) -> ::core::result::Result<
            ($crate::stream::ItemSink<$upty>, $crate::stream::ItemStream<$ok>),
            $crate::RpcError,
        > {
            self.peer.bidi_stream_declared(&$($info)+, &($($p,)*))
        }
    };
    ([$($doc:literal),*] $vis:vis $kind:ident $m:ident [$($p:ident : $pty:ty),*] $ok:ty [] $($info:tt)+) => {
        $(#[doc = $doc])*
        $vis async fn $m(&self, $($p: $pty),*) -> ::core::result::Result<$ok, $crate::RpcError> {
            self.peer.call_declared(&$($info)+, &($($p,)*)).await
        }
    };
}
