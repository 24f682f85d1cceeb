//! The introspection methods every node serves: `system.listMethods`, `system.methodHelp`
//! and `system.methodSignature` (XML-RPC's introspection API). They read the table through
//! a weak handle, so the table never keeps itself alive.

use super::Handlers;

/// Registers the introspection methods on `handlers`.
pub(crate) fn register(handlers: &Handlers) {
    let table = handlers.methods.downgrade();
    handlers
        .register_fn("system.listMethods", move |(): ()| {
            table.upgrade().map(|m| m.names()).unwrap_or_default()
        })
        .help("system.listMethods() -> [string]: the names of every method this node serves");

    let table = handlers.methods.downgrade();
    handlers
        .register_try_fn("system.methodHelp", move |name: String| {
            let entry = table.upgrade().and_then(|m| m.lookup(&name));
            entry
                .map(|e| e.help())
                .ok_or_else(|| format!("no method `{name}` is registered"))
        })
        .params(&["name"])
        .help(
            "system.methodHelp(name: string) -> string: the method's signature and documentation",
        );

    let table = handlers.methods.downgrade();
    handlers
        .register_try_fn("system.methodSignature", move |name: String| {
            let entry = table.upgrade().and_then(|m| m.lookup(&name));
            entry
                .map(|e| vec![e.signature.xmlrpc()])
                .ok_or_else(|| format!("no method `{name}` is registered"))
        })
        .params(&["name"])
        .help("system.methodSignature(name: string) -> [[string]]: the XML-RPC types of the result, then of each parameter");
}
