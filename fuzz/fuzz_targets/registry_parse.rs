#![no_main]
//! Any bytes as what a registry (or a hostile one) sends: a `WWW-Authenticate` challenge, a
//! token service's JSON, a tag or catalog page, a `Link` header, an upload `Range` header,
//! an error body; and as a user's image reference. Parsing never panics, and:
//! - a challenge re-encoded (token keys, quoted values) parses back to the same challenge;
//! - a `Link` target is a part of the header, a token is a non-empty string of the body;
//! - a reference prints as text that parses back to the same reference.
use libfuzzer_sys::fuzz_target;
use sifovl::registry::Reference;
use sifovl::registry::auth::{Challenge, parse_challenge};
use sifovl::registry::client::{error_detail, token_from_json};
use sifovl::registry::repo::{next_link, page_items, range_received};

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn challenge(text: &str) {
    let Some(c) = parse_challenge(text) else { return };
    assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
    assert!(c.params.keys().all(|k| *k == k.to_ascii_lowercase()));
    if !is_token(&c.scheme) {
        return;
    }
    // Re-encode the parameters whose keys are tokens, values quoted and escaped.
    let params: std::collections::BTreeMap<String, String> =
        c.params.iter().filter(|(k, _)| is_token(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let header = format!("{} {}", c.scheme, encoded.join(", "));
    let again = parse_challenge(&header).expect("a re-encoded challenge parses");
    assert_eq!(again, Challenge { scheme: c.scheme.clone(), params }, "header {header:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = token_from_json("registry.test", data) {
        assert!(!token.is_empty());
    }
    let _ = error_detail(data);
    if let Ok(items) = page_items(data, "tags", "tags") {
        assert!(items.len() <= data.len());
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    challenge(text);
    if let Some(target) = next_link(text) {
        assert!(text.contains(&target), "a Link target comes from the header");
    }
    let _ = range_received(text);
    if let Ok(r) = Reference::parse(text) {
        let printed = r.to_string();
        let again = Reference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again, r, "reference {text:?} printed as {printed:?}");
        let _ = r.manifest_reference();
    }
});
