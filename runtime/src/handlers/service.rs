//! Typed services: the [`service!`](crate::service) macro turns one definition into a server
//! trait, a `…Server` wrapper that registers an implementation ([`Service`], through a
//! [`Registry`]), and a typed `…Client` whose calls carry each method's fingerprint.
//!
//! Methods are registered by name, one handler each (no enum of requests): adding a method
//! to a service never changes how the others are called. The macro is declarative; the one
//! thing `macro_rules!` cannot do, joining identifiers (`Calc` → `CalcClient`), is done by
//! `pastey`.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::signature::{MethodInfo, Signature};
use super::{AsyncFn, Handlers, SyncFn};

/// Something that registers its methods on a node: what [`crate::Node::serve`] takes. The
/// `…Server` types [`crate::service!`] generates implement it.
pub trait Service {
    /// Registers every method of the service.
    fn register(self, registry: &Registry<'_>);
}

/// Where a [`Service`] registers its methods.
pub struct Registry<'a> {
    pub(crate) handlers: &'a Handlers,
}

impl Registry<'_> {
    /// Registers a synchronous method declared by `info`: it runs on the connection's reader,
    /// so it must be quick. Its error becomes an `application` error for the caller.
    pub fn sync_method<A, R, E, F>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Display + 'static,
    {
        let signature = Signature::declared(info);
        self.handlers
            .insert(info.name, Arc::new(SyncFn::new(f)), signature);
    }

    /// Registers an async method declared by `info`; each call runs as its own task.
    pub fn async_method<A, R, E, F, Fut>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + 'static,
    {
        let signature = Signature::declared(info);
        self.handlers
            .insert(info.name, Arc::new(AsyncFn::new(f)), signature);
    }
}

/// Declares a service: a server trait, a `…Server` wrapper to register an implementation
/// with [`crate::Node::serve`], and a typed `…Client`.
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

#[doc(hidden)]
#[macro_export]
macro_rules! __service_parse {
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> Result<$ok:ty, $err:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] $ok [$err] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> $ok:ty;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] $ok [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        async fn $m:ident ($($p:ident : $pty:ty),* $(,)?);
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] asynchronous $m [$($p : $pty),*] () [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> Result<$ok:ty, $err:ty>;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] $ok [$err] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?) -> $ok:ty;
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] $ok [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]
        $(#[doc = $doc:literal])*
        fn $m:ident ($($p:ident : $pty:ty),* $(,)?);
        $($rest:tt)*
    ) => {
        $crate::__service_parse! { [$($attr)*] $vis $name
            [$($done)* { [$($doc),*] synchronous $m [$($p : $pty),*] () [] }] $($rest)* }
    };
    ([$($attr:tt)*] $vis:vis $name:ident [$($done:tt)*]) => {
        $crate::__service_expand! { [$($attr)*] $vis $name $($done)* }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_expand {
    ([$($attr:tt)*] $vis:vis $name:ident $({
        [$($doc:literal),*] $kind:ident $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$($err:ty)?]
    })*) => {
        $crate::__private::paste! {
            $($attr)*
            $vis trait $name: ::core::marker::Send + ::core::marker::Sync + 'static {
                $( $crate::__service_method! { [$($doc),*] $kind $m [$($p : $pty),*] $ok [$($err)?] } )*
            }

            #[doc = "Registers an implementation of [`" $name "`] with `Node::serve`."]
            $vis struct [<$name Server>]<T>(pub T);

            impl<T: $name> [<$name Server>]<T> {
                #[doc = "Wraps an implementation of [`" $name "`] for `Node::serve`."]
                $vis fn new(service: T) -> Self {
                    Self(service)
                }
            }

            impl<T: $name> $crate::Service for [<$name Server>]<T> {
                fn register(self, registry: &$crate::Registry<'_>) {
                    let service = ::std::sync::Arc::new(self.0);
                    $( $crate::__service_register! {
                        registry, service, [<$name Client>]::[<$m:upper>],
                        $kind $m [$($p : $pty),*] $ok [$($err)?]
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
                    pub const [<$m:upper>]: $crate::MethodInfo = $crate::MethodInfo::new(
                        ::core::stringify!($m),
                        &[$($crate::Param { name: ::core::stringify!($p), ty: ::core::stringify!($pty) }),*],
                        ::core::stringify!($ok),
                        ::core::concat!("" $(, $doc, "\n")*),
                    );
                )*

                /// Every method of the service, in declaration order.
                pub const METHODS: &'static [&'static $crate::MethodInfo] = &[$(&Self::[<$m:upper>]),*];

                /// A client calling the service over `peer`'s link.
                $vis fn new(peer: impl ::core::convert::Into<$crate::Peer>) -> Self {
                    Self { peer: peer.into() }
                }

                /// The link this client calls over.
                $vis fn peer(&self) -> &$crate::Peer {
                    &self.peer
                }

                $(
                    $(#[doc = $doc])*
                    $vis async fn $m(&self, $($p: $pty),*) -> ::core::result::Result<$ok, $crate::RpcError> {
                        self.peer.call_declared(&Self::[<$m:upper>], &($($p,)*)).await
                    }
                )*
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_method {
    ([$($doc:literal),*] synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> $ok;
    };
    ([$($doc:literal),*] synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> ::core::result::Result<$ok, $err>;
    };
    ([$($doc:literal),*] asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty []) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*) -> impl ::core::future::Future<Output = $ok> + ::core::marker::Send;
    };
    ([$($doc:literal),*] asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty]) => {
        $(#[doc = $doc])*
        fn $m(&self, $($p: $pty),*)
            -> impl ::core::future::Future<Output = ::core::result::Result<$ok, $err>> + ::core::marker::Send;
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_register {
    ($registry:ident, $service:ident, $info:path, synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty []) => {{
        let service = $service.clone();
        $registry.sync_method(&$info, move |($($p,)*): ($($pty,)*)| {
            ::core::result::Result::<$ok, ::core::convert::Infallible>::Ok(service.$m($($p),*))
        });
    }};
    ($registry:ident, $service:ident, $info:path, synchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty]) => {{
        let service = $service.clone();
        $registry.sync_method(&$info, move |($($p,)*): ($($pty,)*)| service.$m($($p),*));
    }};
    ($registry:ident, $service:ident, $info:path, asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty []) => {{
        let service = $service.clone();
        $registry.async_method(&$info, move |($($p,)*): ($($pty,)*)| {
            let service = service.clone();
            async move {
                ::core::result::Result::<$ok, ::core::convert::Infallible>::Ok(service.$m($($p),*).await)
            }
        });
    }};
    ($registry:ident, $service:ident, $info:path, asynchronous $m:ident [$($p:ident : $pty:ty),*] $ok:ty [$err:ty]) => {{
        let service = $service.clone();
        $registry.async_method(&$info, move |($($p,)*): ($($pty,)*)| {
            let service = service.clone();
            async move { service.$m($($p),*).await }
        });
    }};
}
