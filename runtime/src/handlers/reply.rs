//! What a handler returned, read the one way every handler shape shares: a `Result` is a
//! fallible answer — its `Ok` value is the reply, its `Err` the caller's `application`
//! error — and any other value is the reply itself. So one `register` serves
//! `|x: i64| x + 1` and `|x: i64| if x < 0 { Err("negative") } else { Ok(x) }` alike.
//!
//! Rust cannot tell `T` from `Result<T, E>` in a generic (both are `Serialize`), but serde
//! can: a `Result` serializes as the newtype variant `Ok`/`Err` of the enum `Result`.
//! [`split`] asks the value's `Serialize` once with a serializer that stops at the first
//! thing it is told; [`Answer`] then serializes an `Ok` value without its wrapper. Only the
//! top level is read: a `Result` inside a value (a `Vec<Result<..>>`, an `Option`) is data.
//! So is a `Result` wrapped in a newtype struct — the way to answer with one as data. A
//! reference, `Box` or `Arc` around a `Result` serializes as the `Result` and is read as one;
//! so would a user's own enum named `Result` with `Ok`/`Err` variants. For most values the
//! probe allocates nothing (one that serializes through `collect_str` formats once).

use std::fmt;

use bytes::Bytes;
use serde::ser::{Impossible, Serialize, Serializer};

use crate::link::Fault;
use crate::wire::{ErrorKind, RemoteError};

/// A handler's reply, ready to encode: the value, or an `Ok` value unwrapped.
pub(crate) struct Answer<R>(R);

/// A handler's `Err`, as the caller's `application` error carries it: its text, and its
/// value as JSON (`RpcError::data` decodes it).
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    data: Option<Bytes>,
}

impl Fault for Failure {
    fn into_error(self) -> RemoteError {
        let mut error = RemoteError::new(ErrorKind::Application, self.message);
        error.data = self.data;
        error
    }
}

/// `value` as a reply, or, for an `Err`, the failure it says.
pub(crate) fn split<R: Serialize>(value: R) -> Result<Answer<R>, Failure> {
    match value.serialize(Probe) {
        Err(Probed::Err(failure)) => Err(failure),
        Err(Probed::Value) | Ok(()) => Ok(Answer(value)),
    }
}

impl<R: Serialize> Serialize for Answer<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Unwrap(serializer))
    }
}

/// An error's message (the string it is, or its JSON) and its value as JSON.
fn failure<T: Serialize + ?Sized>(error: &T) -> Failure {
    match serde_json::to_value(error) {
        Ok(value) => Failure {
            data: serde_json::to_vec(&value).ok().map(Bytes::from),
            message: match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            },
        },
        Err(e) => Failure {
            message: format!("(an error value that could not be rendered: {e})"),
            data: None,
        },
    }
}

fn is_result(name: &str, variant: &str) -> bool {
    name == "Result" && (variant == "Ok" || variant == "Err")
}

/// Why the probe stopped: the value is not an `Err` (it always stops at once), or it is.
#[derive(Debug)]
enum Probed {
    Value,
    Err(Failure),
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl serde::ser::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed::Value
    }
}

/// A serializer that only looks at the first thing it is told.
struct Probe;

macro_rules! stop {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self $(, _: $arg)*) -> Result<(), Probed> {
            Err(Probed::Value)
        })*
    };
}

impl Serializer for Probe {
    type Ok = ();
    type Error = Probed;
    type SerializeSeq = Impossible<(), Probed>;
    type SerializeTuple = Impossible<(), Probed>;
    type SerializeTupleStruct = Impossible<(), Probed>;
    type SerializeTupleVariant = Impossible<(), Probed>;
    type SerializeMap = Impossible<(), Probed>;
    type SerializeStruct = Impossible<(), Probed>;
    type SerializeStructVariant = Impossible<(), Probed>;

    stop!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Probed> {
        Err(Probed::Value)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Probed> {
        Err(Probed::Value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Probed> {
        if is_result(name, variant) && variant == "Err" {
            return Err(Probed::Err(failure(value)));
        }
        Err(Probed::Value)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Probed> {
        Err(Probed::Value)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Probed> {
        Err(Probed::Value)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Probed> {
        Err(Probed::Value)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Probed> {
        Err(Probed::Value)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Probed> {
        Err(Probed::Value)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Probed> {
        Err(Probed::Value)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Probed> {
        Err(Probed::Value)
    }
}

/// Passes everything to the real serializer, except that a top-level `Ok(v)` is `v`.
struct Unwrap<S>(S);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method(self $(, $arg: $ty)*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Unwrap<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = S::SerializeSeq;
    type SerializeTuple = S::SerializeTuple;
    type SerializeTupleStruct = S::SerializeTupleStruct;
    type SerializeTupleVariant = S::SerializeTupleVariant;
    type SerializeMap = S::SerializeMap;
    type SerializeStruct = S::SerializeStruct;
    type SerializeStructVariant = S::SerializeStructVariant;

    forward!(
        serialize_bool(v: bool), serialize_i8(v: i8), serialize_i16(v: i16),
        serialize_i32(v: i32), serialize_i64(v: i64), serialize_i128(v: i128),
        serialize_u8(v: u8), serialize_u16(v: u16), serialize_u32(v: u32),
        serialize_u64(v: u64), serialize_u128(v: u128), serialize_f32(v: f32),
        serialize_f64(v: f64), serialize_char(v: char), serialize_str(v: &str),
        serialize_bytes(v: &[u8]), serialize_none(), serialize_unit(),
        serialize_unit_struct(name: &'static str),
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(value)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        if is_result(name, variant) && variant == "Ok" {
            return value.serialize(self.0);
        }
        self.0
            .serialize_newtype_variant(name, index, variant, value)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<S::SerializeSeq, S::Error> {
        self.0.serialize_seq(len)
    }

    fn serialize_tuple(self, len: usize) -> Result<S::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<S::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeTupleVariant, S::Error> {
        self.0.serialize_tuple_variant(name, index, variant, len)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<S::SerializeMap, S::Error> {
        self.0.serialize_map(len)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<S::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeStructVariant, S::Error> {
        self.0.serialize_struct_variant(name, index, variant, len)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<R: Serialize>(value: R) -> Result<String, String> {
        split(value)
            .map(|answer| serde_json::to_string(&answer).unwrap())
            .map_err(|failure| failure.message)
    }

    #[derive(serde::Serialize)]
    enum Refusal {
        Insufficient { need: u64 },
    }

    #[test]
    fn a_result_is_split_and_anything_else_is_the_value() {
        assert_eq!(json(5), Ok("5".into()));
        assert_eq!(json(Ok::<_, String>(vec![1, 2])), Ok("[1,2]".into()));
        assert_eq!(json(Err::<i64, _>("negative")), Err("negative".into()));
        assert_eq!(
            json(Err::<i64, _>(Refusal::Insufficient { need: 3 })),
            Err(r#"{"Insufficient":{"need":3}}"#.into())
        );
        // Only the top level is read: a result inside a value is part of the value.
        assert_eq!(json(vec![Ok::<i64, String>(1)]), Ok(r#"[{"Ok":1}]"#.into()));
        assert_eq!(json(Some(Ok::<i64, String>(1))), Ok(r#"{"Ok":1}"#.into()));
        assert_eq!(json(()), Ok("null".into()));
    }

    #[test]
    fn an_unwrapped_value_has_the_bytes_of_the_plain_value() {
        let config = bincode::config::standard();
        let plain = bincode::serde::encode_to_vec(("a", 7u64), config).unwrap();
        let answer = split(Ok::<_, String>(("a", 7u64))).unwrap();
        assert_eq!(
            bincode::serde::encode_to_vec(&answer, config).unwrap(),
            plain
        );
    }
}
