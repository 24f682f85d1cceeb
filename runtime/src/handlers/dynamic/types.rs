//! [`Type`]: the types a dynamic method may declare — Python's names for the shapes JSON and
//! bincode share — and the two directions a type drives: reading a value of it from either
//! encoding ([`Reader`], [`Params`]) and writing one ([`Typed`]) exactly as the Rust type of
//! the same name would be written (`int` is an `i64`, `list[T]` a `Vec<T>`,
//! `Optional[T]` an `Option<T>`).
//!
//! `any` takes whatever JSON holds; in bincode, which cannot say what it holds, an `any`
//! travels as the JSON text of the value (a Rust caller sends a `String`), so signatures
//! name it `json`.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::value::{AnyVisitor, Value};

/// The type of a parameter or a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// Any JSON-shaped value (an unannotated Python parameter).
    Any,
    /// `None`: no value (Rust `()`).
    Unit,
    /// `bool`.
    Bool,
    /// `int`: a 64-bit signed integer.
    Int,
    /// `float`: a 64-bit float.
    Float,
    /// `str`.
    Str,
    /// `bytes`.
    Bytes,
    /// `list[T]`.
    List(Box<Type>),
    /// `dict[str, T]`.
    Map(Box<Type>),
    /// `Optional[T]`: `None` or a `T`.
    Option(Box<Type>),
}

/// How deep `list[list[…]]` may nest in a declaration.
const MAX_DEPTH: usize = 32;

impl Type {
    /// Reads a type written the way Python annotates it: `int`, `float`, `str`, `bytes`,
    /// `bool`, `None`, `any`, `list[T]`, `dict[str, T]`, `Optional[T]`.
    ///
    /// # Errors
    /// A message naming what was not understood.
    pub fn parse(text: &str) -> Result<Type, String> {
        let (ty, rest) = parse_at(text.trim(), 0)?;
        match rest.trim() {
            "" => Ok(ty),
            rest => Err(format!("unexpected `{rest}` after the type in `{text}`")),
        }
    }

    /// The Rust type a method of this type declares, as signatures print it.
    pub(crate) fn rust_name(&self) -> String {
        match self {
            Type::Any => "json".to_owned(),
            Type::Unit => "()".to_owned(),
            Type::Bool => "bool".to_owned(),
            Type::Int => "i64".to_owned(),
            Type::Float => "f64".to_owned(),
            Type::Str => "string".to_owned(),
            Type::Bytes => "bytes".to_owned(),
            Type::List(t) => format!("Vec<{}>", t.rust_name()),
            Type::Map(t) => format!("HashMap<string, {}>", t.rust_name()),
            Type::Option(t) => format!("Option<{}>", t.rust_name()),
        }
    }

    /// `value` if it is of this type (an `int` where a `float` is declared becomes one, a
    /// list of byte values where `bytes` is becomes bytes); otherwise what it is instead.
    pub(crate) fn check(&self, value: Value) -> Result<Value, String> {
        match (self, value) {
            (Type::Any, v) => Ok(v),
            (Type::Unit | Type::Option(_), Value::Null) => Ok(Value::Null),
            (Type::Option(t), v) => t.check(v),
            (Type::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (Type::Int, Value::Int(i)) if i64::try_from(i).is_ok() => Ok(Value::Int(i)),
            (Type::Int, Value::Int(i)) => Err(format!("int {i}, which does not fit in 64 bits")),
            (Type::Float, Value::Float(f)) => Ok(Value::Float(f)),
            (Type::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
            (Type::Str, Value::Str(s)) => Ok(Value::Str(s)),
            (Type::Bytes, Value::Bytes(b)) => Ok(Value::Bytes(b)),
            (Type::Bytes, Value::List(items)) => {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => u8::try_from(*i).ok(),
                        _ => None,
                    })
                    .collect();
                bytes
                    .map(Value::Bytes)
                    .ok_or_else(|| "a list that is not of byte values".to_owned())
            }
            (Type::List(t), Value::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| t.check(v).map_err(|e| format!("{e} at index {i}")))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (Type::Map(t), Value::Map(entries)) => entries
                .into_iter()
                .map(|(k, v)| match t.check(v) {
                    Ok(v) => Ok((k, v)),
                    Err(e) => Err(format!("{e} at key {k:?}")),
                })
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (_, other) => Err(other.describe()),
        }
    }
}

fn parse_at(text: &str, depth: usize) -> Result<(Type, &str), String> {
    if depth > MAX_DEPTH {
        return Err(format!("types nest deeper than {MAX_DEPTH}"));
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (word, rest) = text.split_at(end);
    let word = word.rsplit('.').next().unwrap_or(word); // typing.Optional → Optional
    let simple = match word {
        "any" | "Any" | "object" => Some(Type::Any),
        "None" | "NoneType" => Some(Type::Unit),
        "bool" => Some(Type::Bool),
        "int" => Some(Type::Int),
        "float" => Some(Type::Float),
        "str" => Some(Type::Str),
        "bytes" | "bytearray" => Some(Type::Bytes),
        _ => None,
    };
    if let Some(ty) = simple {
        return Ok((ty, rest));
    }
    match word {
        "list" | "List" => {
            let (item, rest) = parse_at(open(rest, word)?.trim_start(), depth + 1)?;
            if item == Type::Unit {
                // Its items take no bytes: a few bytes could claim a list of any length.
                return Err("`list[None]` carries nothing: its items are all None".to_owned());
            }
            Ok((Type::List(Box::new(item)), close(rest, word)?))
        }
        "Optional" => {
            let (item, rest) = parse_at(open(rest, word)?.trim_start(), depth + 1)?;
            Ok((Type::Option(Box::new(item)), close(rest, word)?))
        }
        "dict" | "Dict" => {
            let (key, rest) = parse_at(open(rest, word)?.trim_start(), depth + 1)?;
            if key != Type::Str {
                return Err(format!("dict keys must be `str`, not `{key}`"));
            }
            let rest = rest
                .trim_start()
                .strip_prefix(',')
                .ok_or_else(|| "`dict` takes two types, as `dict[str, int]`".to_owned())?;
            let (value, rest) = parse_at(rest.trim_start(), depth + 1)?;
            Ok((Type::Map(Box::new(value)), close(rest, word)?))
        }
        "" => Err(format!("expected a type at `{text}`")),
        other => Err(format!(
            "`{other}` is not a type meshrpc can carry (int, float, str, bytes, bool, None, \
             list[T], dict[str, T], Optional[T], or leave the parameter unannotated)"
        )),
    }
}

/// What follows `[` after `word`.
fn open<'t>(rest: &'t str, word: &str) -> Result<&'t str, String> {
    rest.trim_start()
        .strip_prefix('[')
        .ok_or_else(|| format!("`{word}` needs its item type, as `{word}[int]`"))
}

/// What follows the `]` that closes `word[…`.
fn close<'t>(rest: &'t str, word: &str) -> Result<&'t str, String> {
    rest.trim_start()
        .strip_prefix(']')
        .ok_or_else(|| format!("expected `]` to close `{word}[…`"))
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::Unit => f.write_str("None"),
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Str => f.write_str("str"),
            Type::Bytes => f.write_str("bytes"),
            Type::List(t) => write!(f, "list[{t}]"),
            Type::Map(t) => write!(f, "dict[str, {t}]"),
            Type::Option(t) => write!(f, "Optional[{t}]"),
        }
    }
}

/// A value of a type, written as the Rust type of the same name is (after [`Type::check`]).
pub(crate) struct Typed {
    pub(crate) ty: Arc<Type>,
    pub(crate) value: Value,
}

impl Serialize for Typed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Write(&self.ty, &self.value).serialize(serializer)
    }
}

struct Write<'a>(&'a Type, &'a Value);

impl Serialize for Write<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let wrong = || S::Error::custom(format!("{} is not {}", self.1.describe(), self.0));
        match (self.0, self.1) {
            (Type::Any, v) if s.is_human_readable() => v.serialize(s),
            (Type::Any, v) => s.serialize_str(&serde_json::to_string(v).map_err(S::Error::custom)?),
            (Type::Unit, Value::Null) => s.serialize_unit(),
            (Type::Option(_), Value::Null) => s.serialize_none(),
            (Type::Option(t), v) => s.serialize_some(&Write(t, v)),
            (Type::Bool, Value::Bool(b)) => s.serialize_bool(*b),
            (Type::Int, Value::Int(i)) => s.serialize_i64(i64::try_from(*i).map_err(|_| wrong())?),
            (Type::Float, Value::Float(f)) => s.serialize_f64(*f),
            (Type::Float, Value::Int(i)) => s.serialize_f64(*i as f64),
            (Type::Str, Value::Str(text)) => s.serialize_str(text),
            (Type::Bytes, Value::Bytes(b)) => s.serialize_bytes(b),
            (Type::List(t), Value::List(items)) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Write(t, item))?;
                }
                seq.end()
            }
            (Type::Map(t), Value::Map(entries)) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, &Write(t, value))?;
                }
                map.end()
            }
            _ => Err(wrong()),
        }
    }
}

/// Reads one value of a type, from bincode or JSON.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a>(pub(crate) &'a Type);

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Type::Any if d.is_human_readable() => d.deserialize_any(AnyVisitor),
            Type::Any => {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                serde_json::from_str(&text).map_err(|e| {
                    de::Error::custom(format!(
                        "an `any` in bincode is JSON text; this is not: {e}"
                    ))
                })
            }
            Type::Unit => d.deserialize_unit(self),
            Type::Bool => d.deserialize_bool(self),
            Type::Int => d.deserialize_i64(self),
            Type::Float => d.deserialize_f64(self),
            Type::Str => d.deserialize_string(self),
            Type::Bytes => d.deserialize_byte_buf(self),
            Type::List(_) => d.deserialize_seq(self),
            Type::Map(_) => d.deserialize_map(self),
            Type::Option(_) => d.deserialize_option(self),
        }
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        match self.0 {
            Type::Unit | Type::Option(_) => Ok(Value::Null),
            _ => Err(E::invalid_type(de::Unexpected::Unit, &self)),
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Type::Option(t) => Reader(t).deserialize(d),
            _ => Err(de::Error::invalid_type(de::Unexpected::Option, &self)),
        }
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        match self.0 {
            Type::Bool => Ok(Value::Bool(b)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(b), &self)),
        }
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        match self.0 {
            Type::Int => Ok(Value::Int(i.into())),
            Type::Float => Ok(Value::Float(i as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Signed(i), &self)),
        }
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        match (self.0, i64::try_from(u)) {
            (Type::Int, Ok(i)) => Ok(Value::Int(i.into())),
            (Type::Float, _) => Ok(Value::Float(u as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Unsigned(u), &self)),
        }
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        match self.0 {
            Type::Float => Ok(Value::Float(f)),
            _ => Err(E::invalid_type(de::Unexpected::Float(f), &self)),
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.0 {
            Type::Str => Ok(Value::Str(s.to_owned())),
            _ => Err(E::invalid_type(de::Unexpected::Str(s), &self)),
        }
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Value, E> {
        match self.0 {
            Type::Bytes => Ok(Value::Bytes(b.to_vec())),
            _ => Err(E::invalid_type(de::Unexpected::Bytes(b), &self)),
        }
    }
    fn visit_byte_buf<E: de::Error>(self, b: Vec<u8>) -> Result<Value, E> {
        match self.0 {
            Type::Bytes => Ok(Value::Bytes(b)),
            _ => Err(E::invalid_type(de::Unexpected::Bytes(&b), &self)),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let room = seq.size_hint().unwrap_or(0).min(4096);
        match self.0 {
            Type::Bytes => {
                let mut bytes = Vec::with_capacity(room);
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Value::Bytes(bytes))
            }
            Type::List(t) if **t == Type::Unit => Err(de::Error::custom(
                "a list of None cannot travel (its items take no bytes)",
            )),
            Type::List(t) => {
                let mut items = Vec::with_capacity(room);
                while let Some(item) = seq.next_element_seed(Reader(t))? {
                    items.push(item);
                }
                Ok(Value::List(items))
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Seq, &self)),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Type::Map(t) = self.0 else {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        };
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value_seed(Reader(t))?));
        }
        Ok(Value::Map(entries))
    }
}

/// Reads a method's arguments from bincode: the tuple of its parameters (which, for one
/// parameter, is that parameter's bytes, and for none, no bytes).
pub(crate) struct Params<'a>(pub(crate) &'a [Type]);

impl<'de> DeserializeSeed<'de> for Params<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_tuple(self.0.len(), self)
    }
}

impl<'de> Visitor<'de> for Params<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} arguments", self.0.len())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut values = Vec::with_capacity(self.0.len());
        for (i, ty) in self.0.iter().enumerate() {
            match seq.next_element_seed(Reader(ty))? {
                Some(value) => values.push(value),
                None => return Err(de::Error::invalid_length(i, &self)),
            }
        }
        Ok(values)
    }
}
