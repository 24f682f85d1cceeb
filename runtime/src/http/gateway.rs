//! The HTTP gateway of a node (`--http HOST:PORT`): XML-RPC (`POST /` or `/RPC2`, `text/xml`)
//! and JSON-RPC 2.0 (`POST`, `application/json`) on the node's registered methods, plus
//! `GET /metrics` (Prometheus text), `GET /health` (liveness) and `GET /ready` (joined the
//! cluster, not shutting down).
//!
//! Calls go through the same dispatch as binary peers, in process: the gateway hands each
//! call to its node's method table on the road to self (`link::local`), JSON-encoded, as a
//! client of the node (its lane counts in the clients' share and the per-link bound, and
//! handlers see it as the caller), so a method registered once answers all three protocols
//! with the same errors and deadlines; an HTTP client that goes away aborts its call. With a token, every path but
//! `/health` and `/ready` needs it ([`super::access`]); methods outside the allowlist are
//! refused before they are called. Bodies over `http_max_body` are refused (413) before they
//! are read whole, and must arrive within the header timeout. Connections are accepted by
//! [`super::server`]; it stops with the node's root token, last, so probes see the shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::warn;

use super::access::{self, Access};
use super::jsonrpc;
use super::metrics::{self, Stats};
use super::server::{self, Reply, ServerCtx};
use super::xmlrpc::{self, Fault};
use crate::cluster::links::WeakLinks;
use crate::config::NodeConfig;
use crate::error::RpcError;
use crate::link::local::{self, Lane, LocalCall};
use crate::link::{LogLimit, PeerInfo};
use crate::wire::codec;
use crate::wire::{Encoding, NodeId};

/// What the gateway of one node needs: where its node is, how to reach it, when to stop.
pub(crate) struct GatewayCtx {
    /// The node's links: the gateway reaches its node's method table through them.
    pub(crate) links: WeakLinks,
    /// The settings of the gateway as a client (its name, call timeout).
    pub(crate) client: NodeConfig,
    /// Largest request body read.
    pub(crate) max_body: usize,
    /// Set when the node starts shutting down (`/health` and `/ready` answer 503).
    pub(crate) closing: Arc<AtomicBool>,
    /// Set once the node has joined its cluster through its seeds (or has none).
    pub(crate) joined: crate::cluster::Joined,
    /// Who may call, and which methods.
    pub(crate) access: Access,
    /// Where `/metrics` reads the node's gauges from.
    pub(crate) stats: Stats,
    /// How connections are accepted and bounded; holds the intake token that stops it all.
    pub(crate) server: ServerCtx,
}

/// One per node with `--http`.
struct Gateway {
    ctx: GatewayCtx,
    /// Wrong tokens by source address.
    throttle: access::Throttle,
    /// Refusals are logged at most once a second.
    refusals: LogLimit,
    /// The gateway as its node's client: what its calls count in, who handlers see.
    lane: Arc<Lane>,
}

/// Serves HTTP on `listener` until the node stops taking new work.
pub(crate) async fn serve(mut ctx: GatewayCtx, listener: TcpListener) {
    let server = ServerCtx {
        tls: ctx.server.tls.take(),
        tasks: ctx.server.tasks.clone(),
        intake: ctx.server.intake.clone(),
        ..ctx.server
    };
    let lane = Lane::new(PeerInfo {
        id: NodeId::random(),
        name: ctx.client.name.clone(),
        addr: None,
        remote: listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
        incarnation: 0,
        protocol: crate::wire::PROTOCOL_VERSION,
    });
    let gateway = Arc::new(Gateway {
        ctx,
        throttle: access::Throttle::default(),
        refusals: LogLimit::default(),
        lane,
    });
    server::run(server, listener, move |req, remote: SocketAddr| {
        let gateway = gateway.clone();
        async move { gateway.route(req, remote).await }
    })
    .await;
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.into())
}

impl Gateway {
    async fn route(&self, req: Request<Incoming>, remote: SocketAddr) -> Reply {
        let path = req.uri().path().to_owned();
        // Probes need no credentials: they tell only whether the process is up.
        let probe = req.method() == Method::GET && (path == "/health" || path == "/ready");
        let source = remote.ip();
        if !probe && self.throttle.throttled(source) {
            let mut answer = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many wrong tokens from this address: wait a second\n",
            );
            let wait = HeaderValue::from(access::WINDOW.as_secs().max(1));
            answer.headers_mut().insert(RETRY_AFTER, wait);
            return answer;
        }
        if !probe && !self.ctx.access.authorized(req.headers()) {
            self.throttle.failed(source);
            if let Some(more) = self.refusals.admit() {
                warn!(%remote, more, "refused an HTTP request without the gateway's token");
            }
            let mut answer = text(
                StatusCode::UNAUTHORIZED,
                "this gateway needs its token: send it as the password of HTTP Basic \
                 authentication (any user name) or as `Authorization: Bearer TOKEN`\n",
            );
            answer.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"meshrpc\""),
            );
            return answer;
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/health") => match self.ctx.closing.load(Ordering::Relaxed) {
                false => text(StatusCode::OK, "ok\n"),
                true => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            },
            (&Method::GET, "/ready") => {
                if self.ctx.closing.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if !self.ctx.joined.is() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "joining the cluster through its seeds\n",
                    )
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            }
            (&Method::GET, "/metrics") => self.metrics().await,
            (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", super::dashboard::PAGE),
            (&Method::GET, "/api/dashboard") => reply(
                StatusCode::OK,
                "application/json",
                super::dashboard::snapshot(&self.ctx.stats).to_string(),
            ),
            (&Method::POST, "/" | "/RPC2") => {
                // A W3C `traceparent` makes the call (and every call it leads to) part of
                // the caller's trace; an invalid one is ignored, as the specification says.
                let trace = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::wire::Trace::parse);
                match trace {
                    Some(trace) => crate::link::with_trace(trace, self.rpc(req)).await,
                    None => self.rpc(req).await,
                }
            }
            (_, "/" | "/RPC2") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST an XML-RPC or JSON-RPC request here\n",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try GET / (the dashboard), POST /, GET /metrics, GET /health or GET /ready\n",
            ),
        }
    }

    async fn rpc(&self, req: Request<Incoming>) -> Reply {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let xml =
            content_type.starts_with("text/xml") || content_type.starts_with("application/xml");
        let json = content_type.starts_with("application/json");
        if !xml && !json {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type `{content_type}`: send text/xml (XML-RPC) or application/json (JSON-RPC 2.0)\n"),
            );
        }
        // The body has the header timeout too: a body trickled a byte at a time does not hold
        // a connection for longer.
        let limit = self.ctx.server.header_timeout;
        let read = Limited::new(req.into_body(), self.ctx.max_body).collect();
        let Ok(read) = tokio::time::timeout(limit, read).await else {
            let mut answer = text(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {limit:?}\n"),
            );
            answer
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return answer;
        };
        let body = match read {
            Ok(body) => body.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body exceeds {} bytes\n", self.ctx.max_body),
                );
            }
            Err(error) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {error}\n"),
                )
            }
        };
        if json {
            return match jsonrpc::handle(&body, |method, params| self.call(method, params)).await {
                Some(answer) => reply(StatusCode::OK, "application/json", answer.to_string()),
                None => Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default(),
            };
        }
        let xml = match std::str::from_utf8(&body) {
            Ok(xml) => self.xmlrpc(xml).await,
            Err(_) => {
                xmlrpc::write_fault(jsonrpc::PARSE_ERROR, "parse error: the body is not UTF-8")
            }
        };
        reply(StatusCode::OK, "text/xml", xml)
    }

    async fn xmlrpc(&self, body: &str) -> String {
        let (method, params) = match xmlrpc::parse_call(body) {
            Ok(call) => call,
            Err(xmlrpc::XmlError::Parse(m)) => {
                return xmlrpc::write_fault(jsonrpc::PARSE_ERROR, &format!("parse error: {m}"))
            }
            Err(xmlrpc::XmlError::Invalid(m)) => {
                return xmlrpc::write_fault(
                    jsonrpc::INVALID_REQUEST,
                    &format!("invalid XML-RPC request: {m}"),
                )
            }
        };
        let name = method.clone();
        match self.xmlrpc_call(method, params).await {
            Ok(value) => match self.declared_bytes(&name, &value).await {
                Some(bytes) => xmlrpc::write_base64_response(&bytes),
                None => xmlrpc::write_response(&value),
            },
            Err(fault) => xmlrpc::write_fault(fault.code, &fault.message),
        }
    }

    /// `value` as bytes, when `method` declares that it returns bytes (`Vec<u8>`,
    /// `ByteBuf`, `Bytes`: `base64` in its `system.methodSignature`) and the value is
    /// a list of bytes: XML-RPC callers then get a `<base64>` (Python's `Binary`), not a
    /// list of numbers. Only arrays of small integers pay for the signature's lookup.
    async fn declared_bytes(&self, method: &str, value: &Value) -> Option<Vec<u8>> {
        let bytes: Vec<u8> = (value.as_array()?.iter())
            .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<_>>()?;
        // A keyed method (`vcounter.get/KEY`) is declared without its key.
        let declared = method.split_once('/').map_or(method, |(name, _)| name);
        let signature = raw(&Value::Array(vec![Value::from(declared)]));
        let answer = self
            .call_here("system.methodSignature", &signature)
            .await
            .ok()?;
        let returns = answer.get(0)?.get(0)?.as_str()?;
        (returns == "base64").then_some(bytes)
    }

    /// One XML-RPC call, including the introspection methods only XML-RPC has.
    async fn xmlrpc_call(&self, method: String, params: Vec<Value>) -> Result<Value, Fault> {
        let to_fault = |e: RpcError| Fault {
            code: jsonrpc::code(&e),
            message: e.to_string(),
        };
        self.call(method, raw(&Value::Array(params)))
            .await
            .map_err(to_fault)
    }

    /// `system.multicall([{methodName, params}, ...])`, as Python's
    /// `register_multicall_functions` answers it: each result in a one-element array, or a
    /// fault struct.
    async fn multicall(&self, params: Box<RawValue>) -> Result<Value, RpcError> {
        let params: Value = serde_json::from_str(params.get()).unwrap_or(Value::Null);
        let calls = match params {
            Value::Array(mut outer) if outer.len() == 1 => outer.pop(),
            _ => None,
        };
        let Some(Value::Array(calls)) = calls else {
            return Err(RpcError::BadArguments {
                method: "system.multicall".into(),
                detail: "`system.multicall` takes 1 argument (calls: [{methodName, params}])"
                    .into(),
            });
        };
        if calls.len() > jsonrpc::MAX_BATCH {
            return Err(RpcError::BadArguments {
                method: "system.multicall".into(),
                detail: format!(
                    "{} calls in one `system.multicall`; at most {} go in one",
                    calls.len(),
                    jsonrpc::MAX_BATCH
                ),
            });
        }
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            results.push(self.multicall_one(call).await);
        }
        Ok(Value::Array(results))
    }

    async fn multicall_one(&self, call: Value) -> Value {
        let method = call
            .get("methodName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let params = call
            .get("params")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        let fault = |code, message: &str| xmlrpc::fault_value(code, message);
        match (method, params) {
            (Some(m), _) if m == "system.multicall" => fault(
                jsonrpc::INVALID_REQUEST,
                "system.multicall cannot be nested",
            ),
            (Some(m), params @ Value::Array(_)) => match self.call_one(m, raw(&params)).await {
                Ok(value) => Value::Array(vec![value]),
                Err(e) => fault(jsonrpc::code(&e), &e.to_string()),
            },
            _ => fault(
                jsonrpc::INVALID_REQUEST,
                "each call is a struct with methodName and a params array",
            ),
        }
    }

    /// Answers a call: `system.multicall` here, anything else on the node.
    async fn call(&self, method: String, params: Box<RawValue>) -> Result<Value, RpcError> {
        match method.as_str() {
            "system.multicall" => self.multicall(params).await,
            _ => self.call_one(method, params).await,
        }
    }

    /// Calls `method` on this node through the gateway's own link, JSON-encoded, if the
    /// allowlist lets it through.
    async fn call_one(&self, method: String, params: Box<RawValue>) -> Result<Value, RpcError> {
        if !self.ctx.access.allows(&method) {
            return Err(RpcError::Forbidden {
                method,
                message: "this gateway does not serve it (see --http-methods)".to_owned(),
            });
        }
        let result = self.call_here(&method, &params).await;
        match (method.as_str(), result) {
            // Callers of this gateway are told only of what it lets them call, including the
            // `system.multicall` it answers itself (XML-RPC).
            ("system.listMethods", Ok(Value::Array(names))) => {
                let mut names: Vec<Value> = names
                    .into_iter()
                    .filter(|n| n.as_str().is_some_and(|n| self.ctx.access.allows(n)))
                    .chain(std::iter::once(Value::from("system.multicall")))
                    .collect();
                names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                Ok(Value::Array(names))
            }
            (_, result) => result,
        }
    }

    /// Runs `method(params)` on this node, in process, as the gateway's client lane.
    async fn call_here(&self, method: &str, params: &RawValue) -> Result<Value, RpcError> {
        let stopped = || RpcError::Shutdown("the node is shutting down".into());
        if self.ctx.server.intake.is_cancelled() {
            return Err(RpcError::Shutdown("the node has stopped".into()));
        }
        let links = self.ctx.links.upgrade().ok_or_else(stopped)?;
        let call = LocalCall {
            method,
            encoding: Encoding::Json,
            body: Bytes::copy_from_slice(params.get().as_bytes()),
            timeout: self.ctx.client.default_timeout,
            from_node: false,
            trace: crate::link::current_trace(),
            lane: Some(self.lane.clone()),
        };
        let (encoding, body) = local::call(links.link_ctx(), call).await?;
        codec::decode_result(encoding, &body)
            .map_err(|e| RpcError::Protocol(format!("cannot decode the result of `{method}`: {e}")))
    }

    async fn metrics(&self) -> Reply {
        if metrics::render().is_none() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics are not available in this process: no Prometheus recorder is installed (meshrpc::install_prometheus, which `meshrpc node` calls, with the `prometheus` feature)\n",
            );
        }
        self.ctx.stats.record().await;
        let rendered = metrics::render().unwrap_or_default();
        reply(StatusCode::OK, "text/plain; version=0.0.4", rendered)
    }
}

/// `value` as JSON text, for the gateway's one calling path.
fn raw(value: &Value) -> Box<RawValue> {
    // A `Value` always serializes.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| unreachable!())
}
