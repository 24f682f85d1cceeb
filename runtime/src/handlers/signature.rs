//! What a method says about itself: its parameters (names and types), its result type, its
//! documentation, and — for methods declared with [`crate::service!`] — a fingerprint of
//! those types that typed callers send with each call, so a caller and a callee whose
//! definitions disagree get `bad_arguments` naming both, not a misread value.
//!
//! [`MethodInfo`] is the static declaration the macro writes; [`Signature`] is what the
//! method table keeps for every method, declared or inferred from Rust type names.

/// One declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name, as declared.
    pub name: &'static str,
    /// Its type, as written in the declaration.
    pub ty: &'static str,
}

/// A method as [`crate::service!`] declares it: the descriptor shared by its typed client
/// and its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The registered name.
    pub name: &'static str,
    /// The parameters, in order.
    pub params: &'static [Param],
    /// The result type, as written (the `T` of a declared `Result<T, E>`).
    pub result: &'static str,
    /// The doc comment, one line per `///` line.
    pub doc: &'static str,
    /// FNV-1a over the parameter and result types, whitespace ignored: callers and callees
    /// compare it on every typed call. Parameter names are not part of it.
    pub fingerprint: u64,
    /// For a method that reads a stream from its caller: the items' type.
    pub upload: Option<&'static str>,
    /// True when the method streams its result: `result` is then the items' type.
    pub streams: bool,
}

impl MethodInfo {
    /// Declares a method; the fingerprint is computed at compile time.
    pub const fn new(
        name: &'static str,
        params: &'static [Param],
        result: &'static str,
        doc: &'static str,
    ) -> Self {
        MethodInfo {
            name,
            params,
            result,
            doc,
            fingerprint: fingerprint(params, None, result, false),
            upload: None,
            streams: false,
        }
    }

    /// Declares a streaming method: it reads `upload` items from its caller (if any), and
    /// answers with a stream of `result` items (if `streams`) or with one `result`.
    pub const fn streaming(
        name: &'static str,
        params: &'static [Param],
        upload: Option<&'static str>,
        result: &'static str,
        streams: bool,
        doc: &'static str,
    ) -> Self {
        MethodInfo {
            name,
            params,
            result,
            doc,
            fingerprint: fingerprint(params, upload, result, streams),
            upload,
            streams,
        }
    }

    /// `add(a: i64, b: i64) -> i64`.
    pub fn signature(&self) -> String {
        Signature::declared(self).text(self.name)
    }
}

/// FNV-1a 64 over the types, skipping whitespace, with a separator after each type; a
/// streaming method's upload type follows `<-`, and a streamed result `stream`.
const fn fingerprint(params: &[Param], upload: Option<&str>, result: &str, streams: bool) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < params.len() {
        hash = fnv(hash, params[i].ty.as_bytes());
        i += 1;
    }
    if let Some(upload) = upload {
        hash = fnv(hash, b"<-");
        hash = fnv(hash, upload.as_bytes());
    }
    hash = fnv(hash, b"->");
    if streams {
        hash = fnv(hash, b"stream");
    }
    fnv(hash, result.as_bytes())
}

const fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !b.is_ascii_whitespace() {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i += 1;
    }
    hash ^= b';' as u64;
    hash.wrapping_mul(0x0100_0000_01b3)
}

/// What the method table knows of a method's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signature {
    /// Parameter names (when known) and friendly type names.
    pub(crate) params: Vec<(Option<String>, String)>,
    pub(crate) result: String,
    /// Declared methods only.
    pub(crate) fingerprint: Option<u64>,
    /// The argument type is the tuple of the parameters, even for one parameter (declared
    /// methods); otherwise a single parameter is the argument type itself.
    pub(crate) tuple: bool,
    pub(crate) doc: String,
    /// For a method that reads a stream from its caller: the items' type.
    pub(crate) upload: Option<String>,
}

impl Signature {
    /// From a declaration.
    pub(crate) fn declared(info: &MethodInfo) -> Self {
        Signature {
            params: info
                .params
                .iter()
                .map(|p| (Some(p.name.to_owned()), friendly(p.ty)))
                .collect(),
            result: if info.streams {
                format!("stream<{}>", friendly(info.result))
            } else {
                friendly(info.result)
            },
            fingerprint: Some(info.fingerprint),
            tuple: true,
            upload: info.upload.map(|ty| format!("stream<{}>", friendly(ty))),
            doc: info
                .doc
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// From the Rust types of a function taking `A` and returning `R`: a tuple argument is
    /// that many parameters, `()` none, anything else one.
    pub(crate) fn of<A, R>() -> Self {
        let params = split_tuple(std::any::type_name::<A>())
            .into_iter()
            .map(|ty| (None, friendly(&ty)))
            .collect();
        Signature {
            params,
            result: friendly(&ok_type(std::any::type_name::<R>())),
            fingerprint: None,
            tuple: false,
            doc: String::new(),
            upload: None,
        }
    }

    /// A streaming method's: takes `A` (and, when `U` is not `()`, a stream of `U` from
    /// the caller), and answers with `result` (`stream<T>`, or the client stream's result).
    pub(crate) fn streaming<A, U>(result: String) -> Self {
        let mut signature = Self::of::<A, ()>();
        signature.result = result;
        let upload = std::any::type_name::<U>();
        if upload != "()" {
            signature.upload = Some(format!("stream<{}>", friendly(upload)));
        }
        signature
    }

    /// `stream<T>`.
    pub(crate) fn stream_of<T>() -> String {
        format!("stream<{}>", friendly(&ok_type(std::any::type_name::<T>())))
    }

    /// Gives the parameters names (`Registered::params`); ignored if the count differs.
    pub(crate) fn name_params(&mut self, names: &[&str]) -> bool {
        if names.len() != self.params.len() {
            return false;
        }
        for ((name, _), given) in self.params.iter_mut().zip(names) {
            *name = Some((*given).to_owned());
        }
        true
    }

    /// The names of the parameters, if every one has a name.
    pub(crate) fn names(&self) -> Option<Vec<&str>> {
        self.params.iter().map(|(n, _)| n.as_deref()).collect()
    }

    /// `(a: i64, b: i64)`.
    pub(crate) fn params_text(&self) -> String {
        let each: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| match name {
                Some(name) => format!("{name}: {ty}"),
                None => ty.clone(),
            })
            .collect();
        format!("({})", each.join(", "))
    }

    /// `add(a: i64, b: i64) -> i64`; `scan(stream<i64>, start: i64) -> stream<i64>` for a
    /// method that reads an upload (always its first parameter).
    pub(crate) fn text(&self, method: &str) -> String {
        let mut params = self.params_text();
        if let Some(upload) = &self.upload {
            let sep = if self.params.is_empty() { "" } else { ", " };
            params.insert_str(1, &format!("{upload}{sep}"));
        }
        format!("{method}{params} -> {}", self.result)
    }

    /// XML-RPC's `system.methodSignature` form: the result's type, then each parameter's.
    pub(crate) fn xmlrpc(&self) -> Vec<&'static str> {
        std::iter::once(&self.result)
            .chain(self.params.iter().map(|(_, ty)| ty))
            .map(|ty| xmlrpc_type(ty))
            .collect()
    }
}

/// What a method that returns `ty` answers with: the `T` of a `Result<T, E>` (its `Err`
/// is an error, not a value), `ty` itself otherwise; through the `Answer` a registered
/// closure's reply is wrapped in.
pub(crate) fn ok_type(ty: &str) -> String {
    let ty = ty
        .strip_prefix("meshrpc::handlers::reply::Answer<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(ty);
    let args = ty
        .strip_prefix("core::result::Result<")
        .and_then(|t| t.strip_suffix('>'));
    match args.and_then(|args| split_tuple(&format!("({args})")).into_iter().next()) {
        Some(ok) => ok,
        None => ty.to_owned(),
    }
}

/// The top-level members of a tuple type name; `()` has none, a non-tuple is itself.
fn split_tuple(ty: &str) -> Vec<String> {
    let ty = ty.trim();
    let Some(inner) = ty.strip_prefix('(').and_then(|t| t.strip_suffix(')')) else {
        return vec![ty.to_owned()];
    };
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(inner[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        parts.push(last.to_owned());
    }
    parts
}

/// A type name as a caller reads it: paths dropped (`alloc::string::String` → `String`),
/// spacing tidied, text types as `string` and byte buffers as `bytes`.
pub(crate) fn friendly(ty: &str) -> String {
    let mut out = String::with_capacity(ty.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // Keep only the last path segment of a word such as `alloc::vec::Vec`.
        let last = word.rsplit("::").next().unwrap_or("");
        out.push_str(last);
        word.clear();
    };
    for c in ty.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if !c.is_whitespace() {
                out.push(c);
                if c == ',' {
                    out.push(' ');
                }
            }
        }
    }
    flush(&mut word, &mut out);
    match out.as_str() {
        "String" | "&str" | "&'staticstr" | "str" | "Cow<str>" => "string".to_owned(),
        "ByteBuf" | "Vec<u8>" | "Bytes" | "&[u8]" => "bytes".to_owned(),
        _ => out,
    }
}

/// The XML-RPC type a Rust type travels as over the gateway.
fn xmlrpc_type(ty: &str) -> &'static str {
    match ty {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => "int",
        "f32" | "f64" => "double",
        "bool" => "boolean",
        "string" | "char" => "string",
        "bytes" => "base64",
        "()" => "nil",
        t if t.starts_with("Vec<") || t.starts_with('[') || t.starts_with('(') => "array",
        t if t.starts_with("Option<") && t.ends_with('>') => {
            xmlrpc_type(&friendly(&t["Option<".len()..t.len() - 1]))
        }
        _ => "struct",
    }
}

/// Whether a friendly type name is an integer type.
pub(crate) fn is_integer(friendly: &str) -> bool {
    matches!(
        friendly,
        "i8" | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD: MethodInfo = MethodInfo::new(
        "add",
        &[
            Param {
                name: "a",
                ty: "i64",
            },
            Param {
                name: "b",
                ty: "i64",
            },
        ],
        "i64",
        " a + b",
    );

    #[test]
    fn declared_signatures_read_like_rust_and_fingerprint_only_types() {
        assert_eq!(ADD.signature(), "add(a: i64, b: i64) -> i64");
        let renamed = MethodInfo::new(
            "add",
            &[
                Param {
                    name: "x",
                    ty: "i64",
                },
                Param {
                    name: "y",
                    ty: " i64 ",
                },
            ],
            "i64",
            "",
        );
        assert_eq!(
            renamed.fingerprint, ADD.fingerprint,
            "names and spaces do not count"
        );
        let narrower = MethodInfo::new(
            "add",
            &[
                Param {
                    name: "a",
                    ty: "i32",
                },
                Param {
                    name: "b",
                    ty: "i32",
                },
            ],
            "i32",
            "",
        );
        assert_ne!(narrower.fingerprint, ADD.fingerprint);
        let fewer = MethodInfo::new(
            "add",
            &[Param {
                name: "a",
                ty: "i64",
            }],
            "i64",
            "",
        );
        assert_ne!(fewer.fingerprint, ADD.fingerprint, "arity counts");
        assert_eq!(
            Signature::declared(&ADD).xmlrpc(),
            vec!["int", "int", "int"]
        );
    }

    #[test]
    fn inferred_signatures_come_from_type_names() {
        let sig = Signature::of::<(i64, String), Vec<u8>>();
        assert_eq!(sig.text("f"), "f(i64, string) -> bytes");
        assert_eq!(Signature::of::<(), ()>().text("g"), "g() -> ()");
        assert_eq!(Signature::of::<i64, i64>().params.len(), 1);
        let nested = Signature::of::<(Vec<(u8, u8)>, i64), Option<String>>();
        assert_eq!(nested.text("h"), "h(Vec<(u8, u8)>, i64) -> Option<String>");
        assert_eq!(nested.xmlrpc(), vec!["string", "array", "int"]);
    }
}
