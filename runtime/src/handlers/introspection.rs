//! The introspection methods every node serves: `system.listMethods` and
//! `system.methodHelp`. They read the table through a weak handle, so the table never keeps
//! itself alive.

use super::Handlers;

/// Registers `system.listMethods` and `system.methodHelp` on `handlers`.
pub(crate) fn register(handlers: &Handlers) {
    let table = handlers.methods.downgrade();
    handlers
        .register_fn("system.listMethods", move |(): ()| {
            table.upgrade().map(|m| m.names()).unwrap_or_default()
        })
        .help("system.listMethods() -> [string]: the names of every method this node serves");

    let table = handlers.methods.downgrade();
    handlers
        .register("system.methodHelp", move |name: String| {
            let help = table.upgrade().and_then(|m| m.help(&name));
            async move { help.ok_or_else(|| format!("no method `{name}` is registered")) }
        })
        .help("system.methodHelp(name) -> string: the help text given when `name` was registered");
}
