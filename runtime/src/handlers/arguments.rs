//! Decoding a request's arguments into a handler's argument type, with errors in the
//! method's own words: "`add` takes 2 arguments (a: i64, b: i64), got 3", "argument `a` of
//! `add`: 99999999999999999999 does not fit in i64".
//!
//! Bincode arguments are the argument type's bytes. JSON arguments are a positional array,
//! or — for a method whose parameters have names — an object of named parameters, or, for a
//! method taking one struct, that struct as an object. Each element is decoded from its own
//! text (serde_json's `RawValue`), so an error can name the parameter and quote what was sent.

use std::cell::Cell;

use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use super::signature::{is_integer, Signature};
use crate::wire::ErrorKind;
use crate::wire::{codec, Encoding, RemoteError};

/// Decodes the arguments of `method`, whose shape is `signature`.
pub(crate) fn decode<A: DeserializeOwned>(
    method: &str,
    signature: &Signature,
    encoding: Encoding,
    body: &[u8],
) -> Result<A, RemoteError> {
    let bad = |message: String| RemoteError::new(ErrorKind::BadArguments, message);
    match encoding {
        Encoding::Bincode => codec::decode_exact(body).map_err(|e| {
            bad(format!(
                "`{method}` takes {}: the arguments sent do not decode as that ({e})",
                signature.params_text()
            ))
        }),
        Encoding::Json => json(method, signature, body).map_err(bad),
    }
}

/// What the JSON body held.
pub(super) enum Sent<'a> {
    Positional(Vec<&'a RawValue>),
    Named(std::collections::BTreeMap<String, &'a RawValue>),
}

/// An array or an object, each member kept as its own text.
pub(super) fn sent(text: &str) -> Option<Sent<'_>> {
    match text.trim_start().as_bytes().first()? {
        b'[' => serde_json::from_str(text).ok().map(Sent::Positional),
        b'{' => serde_json::from_str(text).ok().map(Sent::Named),
        _ => None,
    }
}

fn json<A: DeserializeOwned>(method: &str, sig: &Signature, body: &[u8]) -> Result<A, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the arguments are not UTF-8".to_owned())?;
    let sent = sent(text).ok_or_else(|| {
        format!(
            "`{method}` takes {}: send a JSON array of the arguments, or an object naming them",
            sig.params_text()
        )
    })?;
    let items = match sent {
        Sent::Positional(items) => items,
        Sent::Named(named) => match sig.names() {
            Some(names) => by_name(method, sig, &names, named)?,
            // One struct argument, sent as an object: it is that argument.
            None if sig.params.len() == 1 => {
                return serde_json::from_str(text).map_err(|e| mismatch(method, sig, 0, text, &e))
            }
            None => {
                return Err(format!(
                    "`{method}` takes {} by position: its parameters have no names, send an array",
                    sig.params_text()
                ))
            }
        },
    };
    let wanted = sig.params.len();
    if items.len() != wanted {
        return Err(arity(method, sig, items.len()));
    }
    match wanted {
        0 => serde_json::from_str("null").map_err(|e| e.to_string()),
        1 if !sig.tuple => {
            let raw = items[0].get();
            serde_json::from_str(raw).map_err(|e| mismatch(method, sig, 0, raw, &e))
        }
        _ => {
            let at = Cell::new(0);
            A::deserialize(Items {
                items: &items,
                at: &at,
            })
            .map_err(|e| {
                let i = at.get().min(items.len() - 1);
                mismatch(method, sig, i, items[i].get(), &e)
            })
        }
    }
}

/// The arguments of an object, in the order of `names`.
pub(super) fn by_name<'a>(
    method: &str,
    sig: &Signature,
    names: &[&str],
    mut named: std::collections::BTreeMap<String, &'a RawValue>,
) -> Result<Vec<&'a RawValue>, String> {
    let mut items = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match named.remove(*name) {
            Some(value) => items.push(value),
            None => missing.push(format!("`{name}`")),
        }
    }
    // Every name it does not know, and every argument left out: a misspelt name is both.
    let unknown: Vec<String> = named.keys().map(|name| format!("`{name}`")).collect();
    let mut wrong = Vec::new();
    match unknown.len() {
        0 => {}
        1 => wrong.push(format!("it has no argument {}", unknown[0])),
        _ => wrong.push(format!("it has no arguments {}", unknown.join(", "))),
    }
    match missing.len() {
        0 => {}
        1 => wrong.push(format!("argument {} is missing", missing[0])),
        _ => wrong.push(format!("arguments {} are missing", missing.join(", "))),
    }
    if wrong.is_empty() {
        return Ok(items);
    }
    Err(format!(
        "`{method}` takes {}: {}",
        sig.params_text(),
        wrong.join("; ")
    ))
}

pub(super) fn arity(method: &str, sig: &Signature, got: usize) -> String {
    let wanted = sig.params.len();
    let got = match got {
        0 => "none".to_owned(),
        n => n.to_string(),
    };
    match wanted {
        0 => format!("`{method}` takes no arguments, got {got}"),
        1 => format!(
            "`{method}` takes 1 argument {}, got {got}",
            sig.params_text()
        ),
        n => format!(
            "`{method}` takes {n} arguments {}, got {got}",
            sig.params_text()
        ),
    }
}

/// Why argument `i` did not decode, quoting what was sent (cut to a readable length).
pub(super) fn mismatch(
    method: &str,
    sig: &Signature,
    i: usize,
    raw: &str,
    error: &serde_json::Error,
) -> String {
    let (name, ty) = match sig.params.get(i) {
        Some((Some(name), ty)) => (format!("`{name}`"), ty.as_str()),
        Some((None, ty)) => (format!("{}", i + 1), ty.as_str()),
        None => ("?".to_owned(), "?"),
    };
    let mut shown: String = raw.chars().take(64).collect();
    if shown.len() < raw.len() {
        shown.push('…');
    }
    let integer_literal = !raw.is_empty()
        && raw
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit());
    if is_integer(ty) && integer_literal {
        return format!("argument {name} of `{method}`: {shown} does not fit in {ty}");
    }
    let mismatch = format!("argument {name} of `{method}`: expected {ty}, got {shown}");
    // For a plain value that says it all; inside an object or array, the decoder's words
    // say which part is wrong (without its line and column in a one-line text).
    if raw.trim_start().starts_with(['{', '[']) {
        format!("{mismatch}: {}", without_position(&error.to_string()))
    } else {
        mismatch
    }
}

/// A serde_json message without its ` at line L column C` ending.
fn without_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// The positional arguments as a sequence, remembering which element is being decoded.
struct Items<'a, 'b> {
    items: &'b [&'a RawValue],
    at: &'b Cell<usize>,
}

impl<'de> Deserializer<'de> for Items<'de, '_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let i = self.at.get();
        let Some(raw) = self.items.get(i) else {
            return Ok(None);
        };
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let value = seed.deserialize(&mut de)?;
        self.at.set(i + 1);
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.at.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::signature::{MethodInfo, Param};

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
        "",
    );
    const FAIL: MethodInfo = MethodInfo::new(
        "fail",
        &[Param {
            name: "message",
            ty: "String",
        }],
        "()",
        "",
    );

    fn add(body: &str) -> Result<(i64, i64), String> {
        json(ADD.name, &Signature::declared(&ADD), body.as_bytes())
    }

    #[test]
    fn positional_and_named_arguments_decode_alike() {
        assert_eq!(add("[40, 2]"), Ok((40, 2)));
        assert_eq!(add(r#"{"a": 40, "b": 2}"#), Ok((40, 2)));
        assert_eq!(add(r#"{"b": 2, "a": 40}"#), Ok((40, 2)));
        let one: (String,) = json(FAIL.name, &Signature::declared(&FAIL), br#"["boom"]"#).unwrap();
        assert_eq!(one.0, "boom");
    }

    #[test]
    fn errors_speak_of_the_method() {
        assert_eq!(
            add("[1, 2, 3]").unwrap_err(),
            "`add` takes 2 arguments (a: i64, b: i64), got 3"
        );
        let none = json::<(String,)>(FAIL.name, &Signature::declared(&FAIL), b"[]");
        assert_eq!(
            none.unwrap_err(),
            "`fail` takes 1 argument (message: string), got none"
        );
        assert_eq!(
            add("[99999999999999999999, 1]").unwrap_err(),
            "argument `a` of `add`: 99999999999999999999 does not fit in i64"
        );
        assert!(add(r#"[1, "two"]"#)
            .unwrap_err()
            .starts_with("argument `b` of `add`: expected i64, got \"two\""));
        assert!(add(r#"{"a": 1}"#)
            .unwrap_err()
            .contains("argument `b` is missing"));
        assert!(add(r#"{"a": 1, "b": 2, "c": 3}"#)
            .unwrap_err()
            .contains("no argument `c`"));
        // A misspelt name is named, and so is what it left out; the parser's own words
        // (with their line and column) stay out of a plain value's mismatch.
        assert_eq!(
            add(r#"{"a": 1, "c": 2}"#).unwrap_err(),
            "`add` takes (a: i64, b: i64): it has no argument `c`; argument `b` is missing"
        );
        assert_eq!(
            add(r#"["2", 3]"#).unwrap_err(),
            "argument `a` of `add`: expected i64, got \"2\""
        );
    }

    #[test]
    fn inferred_signatures_keep_the_positional_convention() {
        let square = Signature::of::<i64, i64>();
        assert_eq!(json::<i64>("square", &square, b"[7]"), Ok(7));
        let pair = Signature::of::<(i64, String), ()>();
        assert_eq!(
            json::<(i64, String)>("f", &pair, br#"[1, "x"]"#),
            Ok((1, "x".to_owned()))
        );
        assert_eq!(
            json::<(i64, String)>("f", &pair, b"[1, 2]").unwrap_err(),
            "argument 2 of `f`: expected string, got 2"
        );
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Scale {
            value: f64,
        }
        let scale = Signature::of::<Scale, f64>();
        assert_eq!(
            json::<Scale>("scale", &scale, br#"{"value": 2.0}"#),
            Ok(Scale { value: 2.0 })
        );
        assert_eq!(
            json::<()>("ping", &Signature::of::<(), ()>(), b"[]"),
            Ok(())
        );
    }
}
