//! JSON-RPC 2.0 over the gateway: single requests, notifications (no response) and batches,
//! with the specification's error codes. Application-level failures use the server range.

use std::future::Future;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::error::RpcError;
use crate::wire::ErrorKind;

/// -32700: the body is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// -32600: JSON, but not a valid request object.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// -32601: no such method.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// -32602: the parameters do not fit the method.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// -32004: the method may not be called through the gateway.
pub(crate) const FORBIDDEN: i64 = -32004;
/// -32603: the handler panicked, or a result could not be encoded.
pub(crate) const INTERNAL_ERROR: i64 = -32603;

/// The code for a failed call: the specification's where one fits, else the server range
/// (-32000 application error, -32001 timeout, -32002 overloaded, -32003 unavailable,
/// -32004 forbidden, -32005 unauthenticated, -32006 moved, -32007 streaming).
pub(crate) fn code(e: &RpcError) -> i64 {
    match e.kind() {
        ErrorKind::MethodNotFound => METHOD_NOT_FOUND,
        ErrorKind::BadArguments => INVALID_PARAMS,
        ErrorKind::Panicked
        | ErrorKind::Protocol
        | ErrorKind::FrameTooLarge
        | ErrorKind::RetryRefused => INTERNAL_ERROR,
        ErrorKind::Application => -32000,
        ErrorKind::Timeout => -32001,
        ErrorKind::Overloaded => -32002,
        ErrorKind::PeerUnavailable | ErrorKind::Disconnected | ErrorKind::Shutdown => -32003,
        ErrorKind::Forbidden => FORBIDDEN,
        ErrorKind::Unauthenticated => -32005,
        ErrorKind::Moved => -32006,
        ErrorKind::Streaming => -32007,
    }
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "error": { "code": code, "message": message.into() }, "id": id })
}

/// Answers one HTTP body; `None` when there is nothing to send back (only notifications).
/// `call(method, params)` runs a method with a positional array or named object, passed as
/// the text the caller sent (so a number keeps its digits, even one no Rust type holds).
pub(crate) async fn handle<F, Fut>(body: &[u8], call: F) -> Option<Value>
where
    F: Fn(String, Box<RawValue>) -> Fut,
    Fut: Future<Output = Result<Value, RpcError>>,
{
    let parse_error = |e: &dyn std::fmt::Display| {
        Some(error(Value::Null, PARSE_ERROR, format!("parse error: {e}")))
    };
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return parse_error(&e),
    };
    let request: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return parse_error(&e),
    };
    match request {
        Value::Array(batch) if batch.is_empty() => Some(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: empty batch",
        )),
        Value::Array(batch) if batch.len() > MAX_BATCH => Some(error(
            Value::Null,
            INVALID_REQUEST,
            format!(
                "invalid request: a batch of {} calls; at most {MAX_BATCH} go in one",
                batch.len()
            ),
        )),
        Value::Array(_) => {
            // Valid JSON, so valid as raw parts too.
            let batch: Vec<&RawValue> = serde_json::from_str(text).unwrap_or_default();
            let answers =
                futures_util::future::join_all(batch.into_iter().map(|r| one(r, &call))).await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        _ => match serde_json::from_str::<&RawValue>(text) {
            Ok(single) => one(single, &call).await,
            Err(e) => parse_error(&e),
        },
    }
}

/// The most calls one batch (or one `system.multicall`) may carry: one request cannot take
/// every slot of the gateway's link to its node (geth's cap, too).
pub(crate) const MAX_BATCH: usize = 1000;

/// The `params` member of a request, as sent.
#[derive(serde::Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

async fn one<F, Fut>(raw: &RawValue, call: &F) -> Option<Value>
where
    F: Fn(String, Box<RawValue>) -> Fut,
    Fut: Future<Output = Result<Value, RpcError>>,
{
    let request: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let Value::Object(mut fields) = request else {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: not an object",
        ));
    };
    let id = fields.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if !matches!(
        id,
        None | Some(Value::Null | Value::String(_) | Value::Number(_))
    ) {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: id must be a string, a number or null",
        ));
    }
    if fields.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Some(error(
            reply_id,
            INVALID_REQUEST,
            "invalid request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let Some(Value::String(method)) = fields.remove("method") else {
        return Some(error(
            reply_id,
            INVALID_REQUEST,
            "invalid request: \"method\" must be a string",
        ));
    };
    let sent = serde_json::from_str::<Params<'_>>(raw.get())
        .ok()
        .and_then(|p| p.params);
    let params = match (fields.remove("params"), sent) {
        (None, _) => RawValue::from_string("[]".to_owned()).unwrap_or_else(|_| unreachable!()),
        (Some(Value::Array(_) | Value::Object(_)), Some(sent)) => sent.to_owned(),
        _ => {
            return Some(error(
                reply_id,
                INVALID_REQUEST,
                "invalid request: \"params\" must be an array or an object",
            ))
        }
    };
    let result = call(method, params).await;
    // A notification (no id) gets no response, whatever happened.
    id.as_ref()?;
    Some(match result {
        Ok(value) => json!({ "jsonrpc": "2.0", "result": value, "id": reply_id }),
        Err(e) => {
            let mut reply = error(reply_id, code(&e), e.to_string());
            // A handler's own error value goes in the error's `data` member.
            if let Some(data) = e.data::<Value>() {
                reply["error"]["data"] = data;
            }
            reply
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn add(method: String, params: Box<RawValue>) -> Result<Value, RpcError> {
        let params: Value = serde_json::from_str(params.get()).unwrap();
        match (method.as_str(), &params) {
            ("add", Value::Array(p)) if p.len() == 2 => Ok(json!(
                p[0].as_i64().unwrap_or(0) + p[1].as_i64().unwrap_or(0)
            )),
            ("add", Value::Object(p)) => Ok(json!(
                p["a"].as_i64().unwrap_or(0) + p["b"].as_i64().unwrap_or(0)
            )),
            ("add", _) => Err(RpcError::BadArguments {
                method,
                detail: "two numbers".into(),
            }),
            _ => Err(RpcError::MethodNotFound { method }),
        }
    }

    fn run(body: &str) -> Option<Value> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(handle(body.as_bytes(), add))
    }

    #[test]
    fn single_named_notification_and_batch() {
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"add","params":[2,3],"id":1}"#),
            Some(json!({"jsonrpc":"2.0","result":5,"id":1}))
        );
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"add","params":{"a":2,"b":3},"id":"x"}"#).unwrap()
                ["result"],
            5
        );
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"add","params":[2,3]}"#),
            None
        );
        let batch = run(r#"[{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1},{"jsonrpc":"2.0","method":"add","params":[1,2]},{"jsonrpc":"2.0","method":"nope","id":3}]"#).unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 2);
        assert_eq!(batch[1]["error"]["code"], METHOD_NOT_FOUND);
        assert_eq!(
            run(r#"[{"jsonrpc":"2.0","method":"add","params":[1,2]}]"#),
            None
        );
    }

    #[test]
    fn every_error_code() {
        let code = |body: &str| run(body).unwrap()["error"]["code"].as_i64().unwrap();
        assert_eq!(code("{not json"), PARSE_ERROR);
        assert_eq!(code("[]"), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","method":"add","id":1}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":5,"id":1}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"add","params":"x","id":1}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"nope","id":1}"#),
            METHOD_NOT_FOUND
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"add","params":[1],"id":1}"#),
            INVALID_PARAMS
        );
        assert_eq!(
            run("[1]").unwrap()[0]["error"]["code"],
            INVALID_REQUEST,
            "each bad batch element"
        );
    }
}
