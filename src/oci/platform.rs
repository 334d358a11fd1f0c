//! Platforms (`os/arch[/variant]`): what an index entry is built for, and which entry of a
//! multi-platform index an import picks.

use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};

/// An `os/architecture[/variant]` triple in Go's (and OCI's) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// Go's architecture name: `amd64`, `arm64`, `ppc64le`, ...
    pub architecture: String,
    /// `v7`, `v8`, ... when the architecture has variants.
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts
                    .get(2)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.to_string()),
            }),
            _ => Err(Error::refused(format!(
                "platform {text:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
            ))),
        }
    }

    /// The machine sifovl runs on, in Go's names (what SingularityCE pulls by default).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The `platform` object of an index entry, if it has one.
    pub fn from_descriptor(descriptor: &Value) -> Option<Platform> {
        let platform = descriptor.get("platform")?;
        Some(Platform {
            os: platform.get("os")?.as_str()?.to_string(),
            architecture: platform.get("architecture")?.as_str()?.to_string(),
            variant: platform
                .get("variant")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        })
    }

    /// How well an image built for `self` serves a request for `wanted`: `None` when it
    /// cannot run there, higher is better (an exact variant beats a missing one).
    pub fn score(&self, wanted: &Platform) -> Option<u8> {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return None;
        }
        let default_variant = match wanted.architecture.as_str() {
            "arm64" => Some("v8"),
            _ => None,
        };
        match (&self.variant, &wanted.variant) {
            (Some(have), Some(want)) if have == want => Some(3),
            (None, Some(want)) if Some(want.as_str()) == default_variant => Some(2),
            (None, _) => Some(1),
            (Some(have), None) if Some(have.as_str()) == default_variant => Some(2),
            (Some(_), None) => Some(1),
            (Some(_), Some(_)) => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_and_matching() {
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("/amd64").is_err());
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(amd.score(&amd), Some(1));
        assert_eq!(amd.score(&arm), None);
        let arm_plain = Platform::parse("linux/arm64").unwrap();
        assert_eq!(arm_plain.score(&arm), Some(2));
        assert_eq!(arm.score(&arm), Some(3));
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        let armv6 = Platform::parse("linux/arm/v6").unwrap();
        assert_eq!(armv6.score(&armv7), None);
        let value: Value = serde_json::from_str(
            r#"{"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}"#,
        )
        .unwrap();
        assert_eq!(Platform::from_descriptor(&value), Some(arm));
    }
}
