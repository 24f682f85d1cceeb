//! Python objects ↔ the runtime's values: `None`, `bool`, `int`, `float`, `str`, `bytes`
//! (and `bytearray`), `list` (and `tuple`), `dict` with `str` keys. Anything else — and a
//! structure nested deeper than [`MAX_DEPTH`], such as a list that contains itself — is a
//! `TypeError` naming what could not travel and where.

use meshrpc::dynamic::Value;
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

/// How deep lists and dicts may nest in a value sent or returned.
const MAX_DEPTH: usize = 64;

/// The value a Python object stands for.
pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    read(obj, 0, &mut String::new())
}

/// A call's arguments: a list of them, or a dict naming them; an error names the argument.
pub(crate) fn from_args(args: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(named) = args.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(named.len());
        for (name, value) in named.iter() {
            let name: String = name.extract()?;
            let mut at = format!("argument `{name}`");
            entries.push((name, read(&value, 1, &mut at)?));
        }
        return Ok(Value::Map(entries));
    }
    let mut values = Vec::new();
    for (i, value) in args.try_iter()?.enumerate() {
        let mut at = format!("argument {}", i + 1);
        values.push(read(&value?, 1, &mut at)?);
    }
    Ok(Value::List(values))
}

fn read(obj: &Bound<'_, PyAny>, depth: usize, at: &mut String) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyTypeError::new_err(format!(
            "a value nested deeper than {MAX_DEPTH} levels (does it contain itself?){}",
            where_(at)
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // `bool` is a subclass of `int`: ask first.
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract()?));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<i128>().map(Value::Int).map_err(|_| {
            PyOverflowError::new_err(format!("an int too large to travel{}", where_(at)))
        });
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.extract()?));
    }
    if let Ok(text) = obj.cast::<PyString>() {
        return Ok(Value::Str(text.to_str()?.to_owned()));
    }
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(bytes.as_bytes().to_vec()));
    }
    if let Ok(bytes) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(bytes.to_vec()));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return items(list.iter(), depth, at).map(Value::List);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return items(tuple.iter(), depth, at).map(Value::List);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(dict.len());
        for (key, value) in dict.iter() {
            let Ok(key) = key.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "a dict key of type {} (keys must be str){}",
                    type_name(&key),
                    where_(at)
                )));
            };
            let key = key.to_str()?.to_owned();
            let len = at.len();
            at.push_str(&format!("[{key:?}]"));
            let value = read(&value, depth + 1, at)?;
            at.truncate(len);
            entries.push((key, value));
        }
        return Ok(Value::Map(entries));
    }
    Err(PyTypeError::new_err(format!(
        "a value of type {} cannot travel{}: meshrpc carries None, bool, int, float, str, \
         bytes, list, tuple and dict with str keys",
        type_name(obj),
        where_(at)
    )))
}

fn items<'py>(
    each: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
    at: &mut String,
) -> PyResult<Vec<Value>> {
    let mut out = Vec::new();
    for (i, item) in each.enumerate() {
        let len = at.len();
        at.push_str(&format!("[{i}]"));
        out.push(read(&item, depth + 1, at)?);
        at.truncate(len);
    }
    Ok(out)
}

fn where_(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!(" (at {at})")
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// The Python object of a value.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (key, value) in entries {
                dict.set_item(key, to_py(py, value)?)?;
            }
            dict.into_any()
        }
    })
}

/// The Python object of a JSON result.
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    value: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as Json;
    Ok(match value {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (_, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any(),
        },
        Json::String(s) => PyString::new(py, s).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(entries) => {
            let dict = PyDict::new(py);
            for (key, value) in entries {
                dict.set_item(key, json_to_py(py, value)?)?;
            }
            dict.into_any()
        }
    })
}
