//! XML-RPC documents: parsing `methodCall` and `methodResponse` into JSON values (the
//! runtime's dynamic encoding) and writing them back. Every type of the specification is
//! handled (int/i4, boolean, string, double, dateTime.iso8601, base64, struct, array) plus
//! the common `nil` and `i8` extensions.
//!
//! Parsing uses quick-xml, bounded: documents with a DOCTYPE (where entity tricks live) are
//! refused, and so is nesting deeper than [`MAX_DEPTH`] or more than [`MAX_NODES`] elements.

use base64::Engine;
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Number, Value};

/// Deepest element nesting accepted.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
pub(crate) const MAX_NODES: usize = 100_000;

/// Why a document was refused; the message goes into the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XmlError {
    /// Not well-formed XML, or refused for safety (DOCTYPE, depth, size).
    Parse(String),
    /// Well-formed, but not an XML-RPC document.
    Invalid(String),
}

/// An XML-RPC fault: a code and a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fault {
    pub(crate) code: i64,
    pub(crate) message: String,
}

struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

fn parse_tree(xml: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = vec![Element {
        name: String::new(),
        text: String::new(),
        children: Vec::new(),
    }];
    let mut nodes = 0usize;
    let parse = |e: quick_xml::Error| XmlError::Parse(e.to_string());
    loop {
        match reader.read_event().map_err(parse)? {
            Event::Start(start) | Event::Empty(start) if stack.len() > MAX_DEPTH => {
                let _ = start;
                return Err(XmlError::Parse(format!(
                    "nested deeper than {MAX_DEPTH} elements"
                )));
            }
            Event::Start(start) => {
                nodes += 1;
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element {
                    name,
                    text: String::new(),
                    children: Vec::new(),
                });
            }
            Event::Empty(start) => {
                nodes += 1;
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let top = stack
                    .last_mut()
                    .ok_or_else(|| XmlError::Parse("unbalanced".into()))?;
                top.children.push(Element {
                    name,
                    text: String::new(),
                    children: Vec::new(),
                });
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| XmlError::Parse("unbalanced".into()))?;
                let parent = stack
                    .last_mut()
                    .ok_or_else(|| XmlError::Parse("unbalanced end tag".into()))?;
                parent.children.push(done);
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(parse)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                let text = String::from_utf8(data.into_inner().into_owned())
                    .map_err(|_| XmlError::Parse("CDATA is not UTF-8".into()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::DocType(_) => {
                return Err(XmlError::Parse(
                    "DOCTYPE declarations are not accepted".into(),
                ))
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
        if nodes > MAX_NODES {
            return Err(XmlError::Parse(format!("more than {MAX_NODES} elements")));
        }
    }
    let mut root = stack
        .pop()
        .filter(|_| stack.is_empty())
        .ok_or_else(|| XmlError::Parse("unclosed element".into()))?;
    match root.children.len() {
        1 => Ok(root.children.remove(0)),
        0 => Err(XmlError::Parse("empty document".into())),
        _ => Err(XmlError::Parse("more than one root element".into())),
    }
}

fn invalid(what: impl Into<String>) -> XmlError {
    XmlError::Invalid(what.into())
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses a `methodCall`: the method name and its parameters.
pub(crate) fn parse_call(xml: &str) -> Result<(String, Vec<Value>), XmlError> {
    let root = parse_tree(xml)?;
    if root.name != "methodCall" {
        return Err(invalid(format!(
            "expected <methodCall>, found <{}>",
            root.name
        )));
    }
    let name = root
        .child("methodName")
        .ok_or_else(|| invalid("<methodName> is missing"))?
        .text
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(invalid("<methodName> is empty"));
    }
    Ok((name, params(&root)?))
}

fn params(parent: &Element) -> Result<Vec<Value>, XmlError> {
    let Some(params) = parent.child("params") else {
        return Ok(Vec::new());
    };
    params
        .children
        .iter()
        .filter(|p| p.name == "param")
        .map(|p| {
            value(
                p.child("value")
                    .ok_or_else(|| invalid("<param> without <value>"))?,
            )
        })
        .collect()
}

/// Parses a `methodResponse`: the value, or the fault.
pub(crate) fn parse_response(xml: &str) -> Result<Result<Value, Fault>, XmlError> {
    let root = parse_tree(xml)?;
    if root.name != "methodResponse" {
        return Err(invalid(format!(
            "expected <methodResponse>, found <{}>",
            root.name
        )));
    }
    if let Some(fault) = root.child("fault") {
        let v = value(
            fault
                .child("value")
                .ok_or_else(|| invalid("<fault> without <value>"))?,
        )?;
        let code = v.get("faultCode").and_then(Value::as_i64).unwrap_or(0);
        let message = v
            .get("faultString")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Ok(Err(Fault { code, message }));
    }
    let mut values = params(&root)?;
    match values.len() {
        1 => Ok(Ok(values.remove(0))),
        n => Err(invalid(format!("a response carries one value, found {n}"))),
    }
}

fn value(v: &Element) -> Result<Value, XmlError> {
    let Some(typed) = v.children.first() else {
        // No type element: a string.
        return Ok(Value::String(v.text.clone()));
    };
    let text = typed.text.trim();
    let number = |what: &str| invalid(format!("<{}> holds `{text}`, not {what}", typed.name));
    Ok(match typed.name.as_str() {
        "int" | "i4" | "i8" => Value::from(text.parse::<i64>().map_err(|_| number("an integer"))?),
        "boolean" => match text {
            "1" | "true" => Value::Bool(true),
            "0" | "false" => Value::Bool(false),
            _ => return Err(number("0 or 1")),
        },
        "string" => Value::String(typed.text.clone()),
        "double" => {
            let x: f64 = text.parse().map_err(|_| number("a number"))?;
            Value::Number(Number::from_f64(x).ok_or_else(|| number("a finite number"))?)
        }
        "dateTime.iso8601" => Value::String(text.to_owned()),
        "base64" => {
            let compact: String = text.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| invalid(format!("bad base64: {e}")))?;
            Value::Array(bytes.into_iter().map(Value::from).collect())
        }
        "nil" => Value::Null,
        "array" => {
            let data = typed
                .child("data")
                .ok_or_else(|| invalid("<array> without <data>"))?;
            Value::Array(
                data.children
                    .iter()
                    .filter(|c| c.name == "value")
                    .map(value)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut map = Map::new();
            for member in typed.children.iter().filter(|c| c.name == "member") {
                let name = member
                    .child("name")
                    .ok_or_else(|| invalid("<member> without <name>"))?;
                let v = member
                    .child("value")
                    .ok_or_else(|| invalid("<member> without <value>"))?;
                map.insert(name.text.clone(), value(v)?);
            }
            Value::Object(map)
        }
        other => return Err(invalid(format!("unknown value type <{other}>"))),
    })
}

/// A `methodResponse` carrying `value`.
pub(crate) fn write_response(value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse><params><param>");
    write_value(value, &mut out);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// A `methodResponse` carrying `bytes` as `<base64>`.
pub(crate) fn write_base64_response(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><base64>{encoded}</base64></value></param></params></methodResponse>\n"
    )
}

/// A `methodResponse` carrying a fault.
pub(crate) fn write_fault(code: i64, message: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse><fault>");
    write_value(&fault_value(code, message), &mut out);
    out.push_str("</fault></methodResponse>\n");
    out
}

/// The struct a fault is made of (also an element of a `system.multicall` result).
pub(crate) fn fault_value(code: i64, message: &str) -> Value {
    serde_json::json!({ "faultCode": code, "faultString": message })
}

/// A `methodCall` of `method` with `params`.
pub(crate) fn write_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    out.push_str(&quick_xml::escape::escape(method));
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        write_value(p, &mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

fn write_value(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Null => out.push_str("<nil/>"),
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => out.push_str(&format!("<int>{i}</int>")),
            (Some(i), _) => out.push_str(&format!("<i8>{i}</i8>")),
            (None, Some(u)) => out.push_str(&format!("<double>{u}</double>")),
            _ => out.push_str(&format!("<double>{}</double>", n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => {
            out.push_str("<string>");
            out.push_str(&quick_xml::escape::escape(s.as_str()));
            out.push_str("</string>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for item in items {
                write_value(item, out);
            }
            out.push_str("</data></array>");
        }
        Value::Object(map) => {
            out.push_str("<struct>");
            for (k, item) in map {
                out.push_str("<member><name>");
                out.push_str(&quick_xml::escape::escape(k.as_str()));
                out.push_str("</name>");
                write_value(item, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_type_parses() {
        let xml = r#"<?xml version="1.0"?>
<methodCall><methodName>m</methodName><params>
<param><value><int>-3</int></value></param>
<param><value><i4>7</i4></value></param>
<param><value><boolean>1</boolean></value></param>
<param><value><string>a &amp; b</string></value></param>
<param><value>bare</value></param>
<param><value><double>2.5</double></value></param>
<param><value><dateTime.iso8601>19980717T14:08:55</dateTime.iso8601></value></param>
<param><value><base64>aGk=</base64></value></param>
<param><value><array><data><value><int>1</int></value><value><string>x</string></value></data></array></value></param>
<param><value><struct><member><name>k</name><value><int>1</int></value></member></struct></value></param>
<param><value><nil/></value></param>
</params></methodCall>"#;
        let (name, params) = parse_call(xml).unwrap();
        assert_eq!(name, "m");
        assert_eq!(
            Value::Array(params),
            json!([-3, 7, true, "a & b", "bare", 2.5, "19980717T14:08:55", [104, 105], [1, "x"], {"k": 1}, null])
        );
    }

    #[test]
    fn responses_round_trip() {
        let v = json!([1, 5_000_000_000i64, "s<", true, null, 1.5, {"a": [2]}]);
        assert_eq!(parse_response(&write_response(&v)).unwrap(), Ok(v));
        let fault = parse_response(&write_fault(-32601, "no such method")).unwrap();
        assert_eq!(
            fault,
            Err(Fault {
                code: -32601,
                message: "no such method".into()
            })
        );
        let call = write_call("add", &[json!(2), json!(3)]);
        assert_eq!(
            parse_call(&call).unwrap(),
            ("add".to_owned(), vec![json!(2), json!(3)])
        );
    }

    /// Mutated documents never panic the parser (a bounded stand-in for a fuzz target).
    #[test]
    fn mutated_documents_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let base = write_call("m", &[json!([1, "x", {"k": [true, null, 2.5]}])]).into_bytes();
        for _ in 0..20_000 {
            let mut doc = base.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..doc.len());
                doc[i] = *b"<>/&;=\"xa1".get(rng.random_range(0..11)).unwrap_or(&b'x');
            }
            let text = String::from_utf8_lossy(&doc);
            let _ = parse_call(&text);
            let _ = parse_response(&text);
        }
    }

    #[test]
    fn hostile_documents_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><methodCall><methodName>&lol;</methodName></methodCall>"#;
        assert!(matches!(parse_call(bomb), Err(XmlError::Parse(m)) if m.contains("DOCTYPE")));
        let deep = format!(
            "<methodCall>{}{}</methodCall>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(matches!(parse_call(&deep), Err(XmlError::Parse(m)) if m.contains("deeper")));
        assert!(matches!(
            parse_call("<methodCall><methodName>x</methodCall>"),
            Err(XmlError::Parse(_))
        ));
        assert!(matches!(parse_call("<foo/>"), Err(XmlError::Invalid(_))));
        let bad_int = "<methodCall><methodName>x</methodName><params><param><value><int>z</int></value></param></params></methodCall>";
        assert!(matches!(parse_call(bad_int), Err(XmlError::Invalid(m)) if m.contains("integer")));
    }
}
