//! JSON as the reference writes it, without losing what it does not know.
//!
//! OCI-SIF index, manifest and config blobs are written by Go's `encoding/json` (through
//! go-containerregistry): compact, no trailing newline, HTML-safe escaping. To produce the
//! same bytes — and so the same digests — as the reference for the same edit, we encode
//! with the same rules. Unlike the reference we parse into an order-preserving
//! [`serde_json::Value`] (features `preserve_order` and `arbitrary_precision`), so unknown
//! fields, key order and number spellings survive an edit.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parse a JSON blob; `what` names it in the error (e.g. `config sha256:…`).
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::malformed(format!("{what}: invalid JSON: {e}")))
}

/// Encode `value` exactly as Go's `json.Marshal` would encode the same document.
#[cfg(test)]
fn to_go_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // With `arbitrary_precision` this is the number exactly as it was spelled.
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Encode a JSON object exactly as Go's `json.Marshal` would encode the same document.
pub(crate) fn object_to_go_bytes(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_object(map, &mut out);
    out
}

/// Parse a JSON blob that must be an object; `kind` says what it should be in the error.
pub(crate) fn parse_object(bytes: &[u8], what: &str, kind: &str) -> Result<Map<String, Value>> {
    match parse(bytes, what)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::malformed(format!(
            "{what}: {kind} is not a JSON object"
        ))),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(item, out);
    }
    out.push(b'}');
}

/// Go's string encoding with `escapeHTML` on (the default of `json.Marshal`).
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let b = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        String::from_utf8(to_go_bytes(&parse(text.as_bytes(), "test").unwrap())).unwrap()
    }

    #[test]
    fn keeps_key_order_unknown_fields_and_number_spelling() {
        assert_eq!(
            roundtrip(
                r#"{ "z": 1, "a": [1.50, 12345678901234567890, -0], "unknown": {"k": null, "b": true} }"#
            ),
            r#"{"z":1,"a":[1.50,12345678901234567890,-0],"unknown":{"k":null,"b":true}}"#
        );
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            roundtrip(r#"{"s":"<a href=\"x\">&</a>\u2028\u0001\b\f\n\t\\é"}"#),
            r#"{"s":"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e\u2028\u0001\b\f\n\t\\é"}"#
        );
    }

    #[test]
    fn reproduces_reference_root_index_bytes() {
        // The RootIndex of the oci-tools AddLayer golden, as quoted in the spec (sec. 1.2).
        let golden = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":584,"digest":"sha256:7d408cf7d5e3b1ba4d8b2f2fcbd5fc4d5a1ba1f9dd7fd0b85b5e1b0a4d1f2b3c","artifactType":"application/vnd.docker.container.image.v1+json"}]}"#;
        assert_eq!(roundtrip(golden), golden);
    }

    #[test]
    fn broken_json_is_a_one_line_error_naming_the_blob() {
        let err = parse(b"{\"a\":", "config sha256:abc").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config sha256:abc: invalid JSON")
        );
        assert!(!err.to_string().contains('\n'));
    }
}
