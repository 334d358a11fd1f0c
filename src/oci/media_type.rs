//! OCI and Docker media types as a type: the ones sifovl acts on by name, and every other
//! one kept as written (`Other`), so that an unknown type survives a load and a save.

use std::fmt;

macro_rules! media_types {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A media type. Known values have a variant; anything else is `Other` and is kept.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum MediaType {
            $($(#[$doc])* $variant,)*
            /// Any media type sifovl does not act on by name, kept verbatim.
            Other(String),
        }

        impl MediaType {
            /// The media type as written in JSON.
            pub fn as_str(&self) -> &str {
                match self {
                    $(MediaType::$variant => $text,)*
                    MediaType::Other(text) => text,
                }
            }

            /// Parse a media type; never fails (unknown ones become `Other`).
            pub fn parse(text: &str) -> MediaType {
                match text {
                    $($text => MediaType::$variant,)*
                    other => MediaType::Other(other.to_string()),
                }
            }
        }
    };
}

media_types! {
    /// An OCI image index.
    OciIndex = "application/vnd.oci.image.index.v1+json",
    /// An OCI image manifest.
    OciManifest = "application/vnd.oci.image.manifest.v1+json",
    /// A Docker v2 schema 2 manifest.
    DockerManifest = "application/vnd.docker.distribution.manifest.v2+json",
    /// A Docker manifest list.
    DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json",
    /// An OCI image config.
    OciConfig = "application/vnd.oci.image.config.v1+json",
    /// A Docker image config.
    DockerConfig = "application/vnd.docker.container.image.v1+json",
    /// A squashfs layer of an OCI-SIF.
    SquashfsLayer = "application/vnd.sylabs.image.layer.v1.squashfs",
    /// The writable ext3 overlay layer of an OCI-SIF.
    Ext3Layer = "application/vnd.sylabs.image.layer.v1.ext3",
    /// An uncompressed OCI tar layer.
    OciLayerTar = "application/vnd.oci.image.layer.v1.tar",
    /// A gzip OCI tar layer.
    OciLayerTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip",
    /// A zstd OCI tar layer.
    OciLayerTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd",
    /// A gzip Docker tar layer (what `docker push` and `--layer-format tar` send).
    DockerLayerTarGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip",
    /// An uncompressed Docker tar layer (as `docker save` archives hold them).
    DockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar",
}

impl MediaType {
    /// An image manifest a runtime can select (OCI or Docker v2).
    pub fn is_image_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// A nested index or manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// A Docker/OCI image config, whose `rootfs` and `history` the reference edits; other
    /// configs (data containers, artifacts) are kept byte for byte.
    pub fn is_image_config(&self) -> bool {
        matches!(self, MediaType::OciConfig | MediaType::DockerConfig)
    }

    /// A tar layer of any compression, including the non-distributable and foreign
    /// variants (whose compression is found by magic bytes anyway).
    pub fn is_tar_layer(&self) -> bool {
        let text = self.as_str();
        (text.starts_with("application/vnd.oci.image.layer.")
            || text.starts_with("application/vnd.docker.image.rootfs."))
            && text.contains(".tar")
    }

    /// A Docker (not OCI) media type: a manifest of this family gets Docker layer types.
    pub fn is_docker(&self) -> bool {
        self.as_str().starts_with("application/vnd.docker.")
    }

    /// The last path element, for compact listings (`squashfs`, `ext3`, `tar+gzip`).
    pub fn short_name(&self) -> &str {
        let text = self.as_str();
        text.rsplit('.').next().unwrap_or(text)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for MediaType {
    fn from(text: &str) -> Self {
        MediaType::parse(text)
    }
}

impl serde::Serialize for MediaType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_round_trip_and_unknown_ones_are_kept() {
        for text in [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.sylabs.image.layer.v1.ext3",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "",
        ] {
            assert_eq!(MediaType::parse(text).as_str(), text);
        }
        assert_eq!(
            MediaType::parse("application/vnd.sylabs.image.layer.v1.squashfs"),
            MediaType::SquashfsLayer
        );
        assert!(matches!(MediaType::parse("x/y"), MediaType::Other(_)));
        assert!(MediaType::DockerManifest.is_image_manifest());
        assert!(!MediaType::OciIndex.is_image_manifest());
        assert_eq!(MediaType::Ext3Layer.short_name(), "ext3");
        assert!(MediaType::DockerLayerTarGzip.is_tar_layer());
        assert!(
            MediaType::parse("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
                .is_tar_layer()
        );
        assert!(!MediaType::SquashfsLayer.is_tar_layer());
        assert!(MediaType::DockerManifest.is_docker());
    }
}
