//! Calling XML-RPC and JSON-RPC 2.0 servers by URL from Rust, with serde arguments and
//! results: for instance the `SimpleXMLRPCServer` of the Python tutorial.
//!
//! Arguments are positional: a tuple or array becomes the parameter list, `()` no
//! parameters, anything else the single parameter. Each call is one HTTP POST over hyper.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::xmlrpc;

/// Why a remote call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The URL does not parse (only `http://` URLs are supported).
    #[error("bad URL `{url}`: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP exchange failed or timed out.
    #[error("HTTP request to {url} failed: {reason}")]
    Http {
        /// The server.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with an error: an XML-RPC fault or a JSON-RPC error object.
    #[error("`{method}` failed on the server: {message} (code {code})")]
    Fault {
        /// The method called.
        method: String,
        /// The fault or error code.
        code: i64,
        /// The fault string or error message.
        message: String,
    },
    /// The answer could not be read, or did not fit the expected result type.
    #[error("cannot read the answer to `{method}`: {reason}")]
    Decode {
        /// The method called.
        method: String,
        /// What failed.
        reason: String,
    },
}

/// Largest response body read.
const MAX_RESPONSE: usize = 64 << 20;

type Http = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

struct Endpoint {
    url: Uri,
    http: Http,
    timeout: Duration,
}

impl Endpoint {
    fn new(url: &str) -> Result<Self, CallError> {
        let bad = |reason: &str| CallError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if parsed.scheme_str() != Some("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ok(Endpoint {
            url: parsed,
            http,
            timeout: Duration::from_secs(30),
        })
    }

    async fn post(&self, content_type: &'static str, body: String) -> Result<Bytes, CallError> {
        let failed = |reason: String| CallError::Http {
            url: self.url.to_string(),
            reason,
        };
        let request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            if !status.is_success() && status != hyper::StatusCode::NO_CONTENT {
                return Err(failed(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                )));
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(failed(format!("no answer within {:?}", self.timeout))))
    }
}

/// Positional parameters from serde arguments (see the module doc).
fn params<A: Serialize>(method: &str, args: A) -> Result<Vec<Value>, CallError> {
    let value = serde_json::to_value(args).map_err(|e| CallError::Decode {
        method: method.to_owned(),
        reason: format!("cannot encode the arguments: {e}"),
    })?;
    Ok(match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    })
}

fn decode<R: DeserializeOwned>(method: &str, value: Value) -> Result<R, CallError> {
    serde_json::from_value(value).map_err(|e| CallError::Decode {
        method: method.to_owned(),
        reason: e.to_string(),
    })
}

/// A client of one XML-RPC server, like Python's `xmlrpc.client.ServerProxy`.
pub struct XmlRpcClient {
    endpoint: Endpoint,
}

impl XmlRpcClient {
    /// A client of the server at `url` (`http://host:port/path`).
    ///
    /// # Errors
    /// `Url` if the URL does not parse or is not `http://`.
    pub fn new(url: &str) -> Result<Self, CallError> {
        Ok(XmlRpcClient {
            endpoint: Endpoint::new(url)?,
        })
    }

    /// Calls `method` with positional `args` and decodes the result as `R`.
    ///
    /// # Errors
    /// `Http`, `Fault` (with the server's code and string) or `Decode`.
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        let body = xmlrpc::write_call(method, &params(method, args)?);
        let answer = self.endpoint.post("text/xml", body).await?;
        let text = String::from_utf8_lossy(&answer);
        let bad = |reason: String| CallError::Decode {
            method: method.to_owned(),
            reason,
        };
        match xmlrpc::parse_response(&text).map_err(|e| bad(format!("{e:?}")))? {
            Ok(value) => decode(method, value),
            Err(fault) => Err(CallError::Fault {
                method: method.to_owned(),
                code: fault.code,
                message: fault.message,
            }),
        }
    }
}

/// A client of one JSON-RPC 2.0 server over HTTP.
pub struct JsonRpcClient {
    endpoint: Endpoint,
    next_id: AtomicU64,
}

impl JsonRpcClient {
    /// A client of the server at `url` (`http://host:port/path`).
    ///
    /// # Errors
    /// `Url` if the URL does not parse or is not `http://`.
    pub fn new(url: &str) -> Result<Self, CallError> {
        Ok(JsonRpcClient {
            endpoint: Endpoint::new(url)?,
            next_id: AtomicU64::new(1),
        })
    }

    /// Calls `method` with positional `args` and decodes the result as `R`.
    ///
    /// # Errors
    /// `Http`, `Fault` (the error object's code and message) or `Decode`.
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = serde_json::json!({ "jsonrpc": "2.0", "method": method, "params": params(method, args)?, "id": id });
        let answer = self
            .endpoint
            .post("application/json", request.to_string())
            .await?;
        let bad = |reason: String| CallError::Decode {
            method: method.to_owned(),
            reason,
        };
        let mut answer: Value = serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
        if let Some(error) = answer.get("error") {
            return Err(CallError::Fault {
                method: method.to_owned(),
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        let result = answer
            .get_mut("result")
            .map(Value::take)
            .ok_or_else(|| bad("no result in the answer".into()))?;
        decode(method, result)
    }
}
