//! The method table of a node: name → [`Entry`] (handler, signature, help, flags). Owned by
//! one node (never a static), written by registration, read by every incoming request: a
//! lookup clones one `Arc`, which the request carries to its handler.

use std::hash::BuildHasherDefault;
use std::sync::Arc;

use dashmap::DashMap;

use super::functions::Handler;
use super::signature::Signature;
use crate::link::FastHasher;

/// One registered method.
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) signature: Signature,
    /// Set by `Registered::help`; otherwise help is the signature and the doc comment.
    help: Option<String>,
    /// Safe to run twice: retries (`Header::Retry`) are accepted.
    pub(crate) idempotent: bool,
    /// Node-only: refused unless the caller is a node.
    pub(crate) internal: bool,
}

impl Entry {
    /// What `system.methodHelp` answers.
    pub(crate) fn help(&self) -> String {
        if let Some(help) = &self.help {
            return help.clone();
        }
        let signature = self.signature.text(&self.name);
        match self.signature.doc.trim() {
            "" => signature,
            doc => format!("{signature}\n\n{doc}"),
        }
    }
}

type Table = DashMap<String, Arc<Entry>, BuildHasherDefault<FastHasher>>;

/// The method table; cheap to clone (all clones share one table).
#[derive(Clone, Default)]
pub(crate) struct Methods {
    table: Arc<Table>,
}

/// A handle to the method table that does not keep it alive (for methods about methods).
pub(crate) struct WeakMethods(std::sync::Weak<Table>);

impl WeakMethods {
    pub(crate) fn upgrade(&self) -> Option<Methods> {
        self.0.upgrade().map(|table| Methods { table })
    }
}

impl Methods {
    pub(crate) fn downgrade(&self) -> WeakMethods {
        WeakMethods(Arc::downgrade(&self.table))
    }

    pub(crate) fn insert(&self, name: &str, handler: Arc<dyn Handler>, signature: Signature) {
        let entry = Entry {
            name: name.into(),
            handler,
            signature,
            help: None,
            idempotent: false,
            internal: false,
        };
        self.table.insert(name.to_owned(), Arc::new(entry));
    }

    /// The entry of `name`.
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Entry>> {
        self.table.get(name).map(|entry| entry.clone())
    }

    /// Changes an entry (registration time only: requests in flight keep the old one).
    fn update(&self, name: &str, change: impl FnOnce(&mut Entry)) {
        if let Some(mut slot) = self.table.get_mut(name) {
            let old = &**slot;
            let mut entry = Entry {
                name: old.name.clone(),
                handler: old.handler.clone(),
                signature: old.signature.clone(),
                help: old.help.clone(),
                idempotent: old.idempotent,
                internal: old.internal,
            };
            change(&mut entry);
            *slot = Arc::new(entry);
        }
    }

    pub(crate) fn set_help(&self, name: &str, help: &str) {
        if !help.is_empty() {
            self.update(name, |e| e.help = Some(help.to_owned()));
        }
    }

    /// Every registered name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }
}

/// Returned by registration, to describe the method further.
pub struct Registered<'a> {
    pub(crate) methods: &'a Methods,
    pub(crate) name: String,
}

impl Registered<'_> {
    /// Sets the method's help text (`system.methodHelp`; by default its signature and doc).
    pub fn help(self, text: &str) -> Self {
        self.methods.set_help(&self.name, text);
        self
    }

    /// Names the parameters, in order, so that JSON-RPC callers (and `meshrpc call ADDR add
    /// a=40 b=2`) may pass them by name and errors can name them. A list whose length is not
    /// the method's number of parameters is ignored.
    pub fn params(self, names: &[&str]) -> Self {
        self.methods.update(&self.name, |e| {
            if !e.signature.name_params(names) {
                tracing::warn!(method = %e.name, given = names.len(), takes = e.signature.params.len(), "parameter names ignored: wrong count");
            }
        });
        self
    }

    /// Declares the method safe to run more than once with the same arguments: callers
    /// that opt in ([`crate::client::CallOptions::retries`]) may then resend a call that timed out or
    /// lost its link. Other methods refuse such resends (`retry_refused`).
    pub fn idempotent(self) -> Self {
        self.methods.update(&self.name, |e| e.idempotent = true);
        self
    }

    /// Declares the method node-only: nodes call it on each other (membership, placement),
    /// and a plain client or the HTTP gateway calling it gets `forbidden`. Without a cluster
    /// cookie any process can claim to be a node, so only a cookie (or TLS) makes this a
    /// boundary; see docs/SECURITY.md.
    pub fn internal(self) -> Self {
        self.methods.update(&self.name, |e| e.internal = true);
        self
    }
}
