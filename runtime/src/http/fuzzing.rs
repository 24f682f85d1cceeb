//! Entry points for the fuzz targets in `fuzz/` (not a public API): the gateway's parsers
//! are private, and these run them on arbitrary input.

/// Parses `text` as an XML-RPC call and as a response.
pub fn xmlrpc(text: &str) {
    let _ = super::xmlrpc::parse_call(text);
    let _ = super::xmlrpc::parse_response(text);
}

/// Handles `body` as a JSON-RPC request, every method answering `null` at once.
pub fn jsonrpc(body: &[u8]) {
    use futures_util::FutureExt;
    let stub = |_: String, _: Box<serde_json::value::RawValue>| async {
        Ok::<_, crate::error::RpcError>(serde_json::Value::Null)
    };
    // Every stubbed call is ready at once, so the whole request completes in one poll.
    let _ = super::jsonrpc::handle(body, stub).now_or_never();
}
