//! Trace context across nodes: the [`Trace`] of the work running now (a task-local, set
//! while a traced request's handler runs), which every call made from that work carries in
//! its request header; and the [`Hop`] a callee records for each traced request it serves —
//! a `tracing` span (`meshrpc::trace`, `rpc`) with the method, the peer and the outcome, and
//! one event when it is answered, so one request can be followed across the cluster by its
//! `trace_id`. Untraced calls cost nothing here.

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use crate::wire::Trace;

tokio::task_local! {
    static CURRENT: Context;
}

/// The trace context of running work: its trace (with this hop's span id) and the span.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) trace: Trace,
    span: tracing::Span,
}

/// The trace the running task's work belongs to, if it is traced.
pub fn current_trace() -> Option<Trace> {
    CURRENT.try_with(|c| c.trace).ok()
}

/// Runs `work` as part of `trace`: every call it makes carries `trace` (its span is their
/// parent). A caller starts a trace with [`Trace::random`], or continues one it was given.
pub async fn with_trace<F: Future>(trace: Trace, work: F) -> F::Output {
    let context = Context {
        trace,
        span: tracing::Span::none(),
    };
    CURRENT.scope(context, work).await
}

/// Runs `f` in `context` (when there is one).
pub(crate) fn in_context<R>(context: Option<Context>, f: impl FnOnce() -> R) -> R {
    match context {
        Some(context) => {
            let span = context.span.clone();
            let _entered = span.enter();
            CURRENT.sync_scope(context, f)
        }
        None => f(),
    }
}

/// `work` in `context` (when there is one), for a task of its own.
pub(crate) fn future_in<F: Future>(
    context: Option<Context>,
    work: F,
) -> futures_util::future::Either<impl Future<Output = F::Output>, F> {
    match context {
        Some(context) => {
            let span = context.span.clone();
            futures_util::future::Either::Left(CURRENT.scope(context, work).instrument(span))
        }
        None => futures_util::future::Either::Right(work),
    }
}

/// One traced request served here.
pub(crate) struct Hop {
    pub(crate) context: Context,
    parent: [u8; 8],
    method: String,
    peer: String,
    started: Instant,
}

impl Hop {
    /// The hop of a request that came with `parent` (the caller's context).
    pub(crate) fn new(parent: Trace, method: &str, peer: &str) -> Self {
        let trace = parent.child();
        let span = tracing::info_span!(
            target: "meshrpc::trace",
            "rpc",
            trace_id = %hex(&trace.trace_id),
            span_id = %hex(&trace.span_id),
            parent_id = %hex(&parent.span_id),
            method,
            peer,
            outcome = tracing::field::Empty,
        );
        Hop {
            context: Context { trace, span },
            parent: parent.span_id,
            method: method.to_owned(),
            peer: peer.to_owned(),
            started: Instant::now(),
        }
    }

    /// The request was answered (or abandoned) with `outcome`.
    pub(crate) fn finish(self, outcome: &str) {
        let Context { trace, span } = self.context;
        span.record("outcome", outcome);
        let elapsed_us = self.started.elapsed().as_micros() as u64;
        tracing::info!(
            target: "meshrpc::trace",
            parent: &span,
            trace_id = %hex(&trace.trace_id),
            span_id = %hex(&trace.span_id),
            parent_id = %hex(&self.parent),
            method = %self.method,
            peer = %self.peer,
            outcome,
            elapsed_us,
            "call served"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
