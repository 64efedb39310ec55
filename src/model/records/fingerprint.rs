//! Schema fingerprints as the Avro specification defines them: the CRC-64-AVRO (Rabin)
//! fingerprint of a schema's Parsing Canonical Form, the 8 bytes that follow `C3 01` in
//! single-object encoding.
//!
//! apache-avro computes the canonical form itself, but keeps a logical type's primitive as an
//! object (`{"type":"long"}` where the specification and the Java implementation write
//! `"long"`), so for any schema with a logical type its fingerprint differs from the one Java,
//! fastavro or the Python `avro` package compute. Herald writes and expects the specification's;
//! [`legacy`] keeps apache-avro's so records Herald wrote before are still read.

use std::collections::HashSet;

use apache_avro::Schema;
use serde_json::Value;

/// The specification's fingerprint of `schema`, in single-object order (little-endian).
pub fn of(schema: &Schema) -> [u8; 8] {
    rabin(canonical_form(schema).as_bytes()).to_le_bytes()
}

/// apache-avro's fingerprint of `schema` (differs from [`of`] when the schema has a logical type).
pub fn legacy(schema: &Schema) -> [u8; 8] {
    rabin(schema.canonical_form().as_bytes()).to_le_bytes()
}

/// The Parsing Canonical Form of `schema`, as the specification defines it.
pub fn canonical_form(schema: &Schema) -> String {
    // Serializing a parsed schema cannot fail: every part of it is plain JSON.
    let json = serde_json::to_value(schema).expect("a parsed schema serializes to JSON");
    let mut out = String::new();
    Canonical::default().write(&json, "", &mut out);
    out
}

/// The CRC-64-AVRO fingerprint of `bytes`.
pub fn rabin(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Writes the canonical form, remembering the named types already written: a later use of a
/// name is written as the full name only ([FULLNAMES] and the spec's rule for repeated names).
#[derive(Default)]
struct Canonical {
    defined: HashSet<String>,
}

impl Canonical {
    fn write(&mut self, schema: &Value, namespace: &str, out: &mut String) {
        match schema {
            Value::String(name) => out.push_str(&quote(&full_name(name, namespace))),
            Value::Array(branches) => {
                out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(branch, namespace, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or_default();
                match kind {
                    "record" | "error" | "enum" | "fixed" => {
                        let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
                        let ns = map
                            .get("namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(namespace);
                        let full = full_name(name, ns);
                        if !self.defined.insert(full.clone()) {
                            out.push_str(&quote(&full));
                            return;
                        }
                        // Names inside take this type's namespace.
                        let inner_ns = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
                        out.push_str(&format!("{{\"name\":{},\"type\":", quote(&full)));
                        // `error` is a record in the canonical form.
                        let kind = if kind == "error" { "record" } else { kind };
                        out.push_str(&quote(kind));
                        match kind {
                            "record" => {
                                out.push_str(",\"fields\":[");
                                let fields = map.get("fields").and_then(Value::as_array);
                                for (i, field) in fields.into_iter().flatten().enumerate() {
                                    if i > 0 {
                                        out.push(',');
                                    }
                                    let fname = field.get("name").and_then(Value::as_str);
                                    out.push_str(&format!(
                                        "{{\"name\":{},\"type\":",
                                        quote(fname.unwrap_or_default())
                                    ));
                                    let ty = field.get("type").unwrap_or(&Value::Null);
                                    self.write(ty, &inner_ns, out);
                                    out.push('}');
                                }
                                out.push(']');
                            }
                            "enum" => {
                                out.push_str(",\"symbols\":[");
                                let symbols = map.get("symbols").and_then(Value::as_array);
                                for (i, s) in symbols.into_iter().flatten().enumerate() {
                                    if i > 0 {
                                        out.push(',');
                                    }
                                    out.push_str(&quote(s.as_str().unwrap_or_default()));
                                }
                                out.push(']');
                            }
                            _ => {
                                let size = map.get("size").map(integer).unwrap_or_default();
                                out.push_str(&format!(",\"size\":{size}"));
                            }
                        }
                        out.push('}');
                    }
                    "array" => {
                        out.push_str("{\"type\":\"array\",\"items\":");
                        self.write(map.get("items").unwrap_or(&Value::Null), namespace, out);
                        out.push('}');
                    }
                    "map" => {
                        out.push_str("{\"type\":\"map\",\"values\":");
                        self.write(map.get("values").unwrap_or(&Value::Null), namespace, out);
                        out.push('}');
                    }
                    // A primitive, with or without a logical type, is written as its name
                    // ([PRIMITIVE]); the logical type is stripped ([STRIP]).
                    _ => match map.get("type") {
                        Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                            self.write(inner, namespace, out)
                        }
                        _ => out.push_str(&quote(&full_name(kind, namespace))),
                    },
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
}

/// `name` qualified with `namespace` unless it is a primitive or already has a dot.
fn full_name(name: &str, namespace: &str) -> String {
    if PRIMITIVES.contains(&name) || name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// A JSON string literal; names and symbols need no escapes, but a doc-free form must stay JSON.
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A size written as a number, with quotes stripped ([INTEGERS]).
fn integer(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(avsc: &str) -> String {
        canonical_form(&Schema::parse_str(avsc).unwrap())
    }

    #[test]
    fn canonical_forms_follow_the_specification() {
        let cases = [
            (r#""int""#, r#""int""#),
            (
                r#"{"type":"long","logicalType":"timestamp-millis"}"#,
                r#""long""#,
            ),
            (
                r#"{"type":"record","name":"R","namespace":"a.b","doc":"d","fields":[
                    {"name":"t","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null},
                    {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
                    {"name":"u","type":{"type":"string","logicalType":"uuid"}},
                    {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
                    {"name":"f","type":{"type":"fixed","name":"F","namespace":"c","size":4}},
                    {"name":"again","type":"E"},
                    {"name":"m","type":{"type":"map","values":{"type":"array","items":"int"}}}]}"#,
                concat!(
                    r#"{"name":"a.b.R","type":"record","fields":["#,
                    r#"{"name":"t","type":["null","long"]},"#,
                    r#"{"name":"d","type":"bytes"},"#,
                    r#"{"name":"u","type":"string"},"#,
                    r#"{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X","Y"]}},"#,
                    r#"{"name":"f","type":{"name":"c.F","type":"fixed","size":4}},"#,
                    r#"{"name":"again","type":"a.b.E"},"#,
                    r#"{"name":"m","type":{"type":"map","values":{"type":"array","items":"int"}}}]}"#,
                ),
            ),
        ];
        for (avsc, expected) in cases {
            assert_eq!(form(avsc), expected, "{avsc}");
        }
    }

    #[test]
    fn rabin_matches_the_specification_vectors() {
        // From the Avro project's share/test/data/schema-tests.txt.
        assert_eq!(rabin(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(rabin(br#""int""#) as i64, 8247732601305521295);
        assert_eq!(rabin(br#""long""#) as i64, -3434872931120570953);
    }

    #[test]
    fn apache_avro_keeps_logical_types_apart_from_the_specification() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        assert_ne!(of(&schema), legacy(&schema));
        let plain = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"t","type":"long"}]}"#,
        )
        .unwrap();
        assert_eq!(of(&plain), legacy(&plain));
        assert_eq!(
            of(&schema),
            of(&plain),
            "a logical type does not change the form"
        );
    }
}
