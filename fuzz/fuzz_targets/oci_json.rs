#![no_main]
//! Any bytes as an OCI index, manifest and config blob: parsing never panics; whatever
//! parses serialises to bytes that parse back to the same typed view and serialise to the
//! same bytes (the round trip is stable); and the edits the operations make (push / pop /
//! retarget a layer, diff_ids, history) leave a blob whose typed view is what the edit
//! says.
use libfuzzer_sys::fuzz_target;
use sifovl::oci::{Config, Descriptor, Digest, Index, Manifest, MediaType, Platform};

fn index(data: &[u8]) {
    let Ok(index) = Index::parse(data, "index") else { return };
    let bytes = index.to_bytes();
    let again = Index::parse(&bytes, "again").expect("a serialised index parses");
    assert_eq!(again.to_bytes(), bytes, "index round trip is stable");
    assert_eq!(again.entries().len(), index.entries().len());
    for (a, b) in again.entries().iter().zip(index.entries()) {
        assert_eq!(a.position, b.position);
        assert_eq!(a.descriptor, b.descriptor);
        assert_eq!(a.ref_name, b.ref_name);
    }
    assert_eq!(again.schema_version(), index.schema_version());
    let _ = index.single_image("index");
    let image = Descriptor {
        media_type: MediaType::OciManifest,
        size: data.len() as u64,
        digest: Digest::of(data),
    };
    let edited = index.with_single_image(image.to_json()).expect("an edited index parses");
    assert_eq!(edited.entries().len(), 1);
    assert_eq!(edited.entries()[0].descriptor, image);
    assert_eq!(edited.single_image("edited").expect("one image").descriptor, image);
}

fn manifest(data: &[u8]) {
    let Ok(mut manifest) = Manifest::parse(data, "manifest") else { return };
    let bytes = manifest.to_bytes();
    let again = Manifest::parse(&bytes, "again").expect("a serialised manifest parses");
    assert_eq!(again.to_bytes(), bytes, "manifest round trip is stable");
    assert_eq!(again.config(), manifest.config());
    assert_eq!(again.layers(), manifest.layers());
    assert_eq!(again.media_type(), manifest.media_type());
    assert_eq!(again.artifact_type(), manifest.artifact_type());

    // The edits `add`, `seal` and `remove-overlay` make.
    let d = Digest::of(data);
    let layer = Descriptor { media_type: MediaType::parse("application/vnd.sylabs.image.layer.v1.ext3"), size: 7, digest: d };
    let mut layers = manifest.layers().to_vec();
    manifest.push_layer(&layer);
    layers.push(layer.clone());
    manifest.set_config(9, &d);
    let mut config = manifest.config().clone();
    config.size = 9;
    config.digest = d;
    let last = layers.len() - 1;
    manifest.set_layer_digest(last, 11, &d).expect("the pushed layer is there");
    layers[last].size = 11;
    let check = |m: &Manifest, layers: &[Descriptor]| {
        let reparsed = Manifest::parse(&m.to_bytes(), "edited").expect("an edited manifest parses");
        assert_eq!(reparsed.layers(), layers);
        assert_eq!(reparsed.config(), &config);
        assert_eq!(reparsed.to_bytes(), m.to_bytes());
    };
    check(&manifest, &layers);
    assert_eq!(manifest.pop_layer().as_ref(), layers.last());
    layers.pop();
    check(&manifest, &layers);
    let _ = manifest.index_descriptor(&bytes, &MediaType::OciManifest, &MediaType::parse("x"));
}

fn config(data: &[u8]) {
    let Ok(mut config) = Config::parse(data, "config") else { return };
    let bytes = config.to_bytes();
    let again = Config::parse(&bytes, "again").expect("a serialised config parses");
    assert_eq!(again.to_bytes(), bytes, "config round trip is stable");
    assert_eq!(again.diff_ids(), config.diff_ids());
    assert_eq!(again.history_len(), config.history_len());

    let d = Digest::of(data);
    let mut ids = config.diff_ids().to_vec();
    config.push_diff_id(&d);
    config.push_empty_history();
    ids.push(d);
    let check = |c: &Config, ids: &[Digest]| {
        let reparsed = Config::parse(&c.to_bytes(), "edited").expect("an edited config parses");
        assert_eq!(reparsed.diff_ids(), ids);
        assert_eq!(reparsed.history_len(), c.history_len());
        assert_eq!(reparsed.to_bytes(), c.to_bytes());
    };
    check(&config, &ids);
    config.set_diff_id(ids.len() - 1, &Digest::of(b"x")).expect("the pushed diff_id is there");
    *ids.last_mut().unwrap() = Digest::of(b"x");
    check(&config, &ids);
    config.pop_layer();
    ids.pop();
    check(&config, &ids);
    config.replace_history("2024-01-01T00:00:00Z", "by", "comment");
    assert_eq!(config.history_len(), 1);
    config.set_diff_ids(&[d, d]);
    check(&config, &[d, d]);
}

fuzz_target!(|data: &[u8]| {
    index(data);
    manifest(data);
    config(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = Platform::parse(text) {
            // What we print parses back to the same platform.
            assert_eq!(Platform::parse(&p.to_string()).expect("a printed platform parses"), p);
        }
        if let Ok(d) = Digest::parse(text) {
            assert_eq!(Digest::parse(&d.to_string()).expect("a printed digest parses"), d);
        }
        let media_type = MediaType::parse(text);
        assert_eq!(MediaType::parse(media_type.as_str()), media_type);
    }
});
