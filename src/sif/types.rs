//! SIF enumerations with the reference's numeric codes and display names.

use std::fmt;

/// Object data types (`DataType`), spec section 4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `0x4001`: the definition file the image was built from (`Def.FILE`).
    Deffile,
    /// `0x4002`: environment variables (`Env.Vars`).
    EnvVar,
    /// `0x4003`: JSON image labels (`JSON.Labels`).
    Labels,
    /// `0x4004`: a filesystem partition (`FS`); Extra holds [`FsType`], [`PartType`], [`Arch`].
    Partition,
    /// `0x4005`: a signature; Extra holds its [`HashType`] and the signing-key fingerprint.
    Signature,
    /// `0x4006`: generic JSON metadata (`JSON.Generic`).
    GenericJson,
    /// `0x4007`: generic raw data (`Generic/Raw`).
    Generic,
    /// `0x4008`: a cryptographic message, e.g. an encrypted image's wrapped key; Extra holds
    /// [`FormatType`] and [`MessageType`].
    CryptoMessage,
    /// `0x4009`: a software bill of materials; Extra holds its [`SbomFormat`].
    Sbom,
    /// `0x400A`: an OCI-SIF's `index.json`; Extra holds its `sha256:` digest as text.
    OciRootIndex,
    /// `0x400B`: one OCI blob (manifest, config or layer); Extra holds its `sha256:` digest.
    OciBlob,
    /// Any other code (0 in unused slots); displayed as `Unknown`.
    Unknown(i32),
}

impl DataType {
    /// Decode the descriptor's `DataType` field; codes outside the table become `Unknown`.
    pub fn from_code(code: i32) -> DataType {
        match code {
            0x4001 => DataType::Deffile,
            0x4002 => DataType::EnvVar,
            0x4003 => DataType::Labels,
            0x4004 => DataType::Partition,
            0x4005 => DataType::Signature,
            0x4006 => DataType::GenericJson,
            0x4007 => DataType::Generic,
            0x4008 => DataType::CryptoMessage,
            0x4009 => DataType::Sbom,
            0x400A => DataType::OciRootIndex,
            0x400B => DataType::OciBlob,
            other => DataType::Unknown(other),
        }
    }

    /// The numeric code stored in the descriptor's `DataType` field.
    pub fn code(self) -> i32 {
        match self {
            DataType::Deffile => 0x4001,
            DataType::EnvVar => 0x4002,
            DataType::Labels => 0x4003,
            DataType::Partition => 0x4004,
            DataType::Signature => 0x4005,
            DataType::GenericJson => 0x4006,
            DataType::Generic => 0x4007,
            DataType::CryptoMessage => 0x4008,
            DataType::Sbom => 0x4009,
            DataType::OciRootIndex => 0x400A,
            DataType::OciBlob => 0x400B,
            DataType::Unknown(c) => c,
        }
    }

    /// The name `siftool list/info` prints.
    pub fn display_name(self) -> &'static str {
        match self {
            DataType::Deffile => "Def.FILE",
            DataType::EnvVar => "Env.Vars",
            DataType::Labels => "JSON.Labels",
            DataType::Partition => "FS",
            DataType::Signature => "Signature",
            DataType::GenericJson => "JSON.Generic",
            DataType::Generic => "Generic/Raw",
            DataType::CryptoMessage => "Cryptographic Message",
            DataType::Sbom => "SBOM",
            DataType::OciRootIndex => "OCI.RootIndex",
            DataType::OciBlob => "OCI.Blob",
            DataType::Unknown(_) => "Unknown",
        }
    }
}

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident {
        $($(#[$vdoc:meta])* $variant:ident = $code:expr => $display:expr),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A code the reference does not define.
            Unknown(i32),
        }

        impl $name {
            /// Decode the stored i32; codes outside the table become `Unknown`.
            pub fn from_code(code: i32) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            /// The i32 code stored in the descriptor's Extra.
            pub fn code(self) -> i32 {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(c) => c,
                }
            }

            /// The reference's display name; `None` for unknown codes.
            pub fn display_name(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some($display),)*
                    $name::Unknown(_) => None,
                }
            }
        }
    };
}

code_enum!(
    /// Partition filesystem type (`Fstype`, Extra bytes 0..4 of a partition; spec 4.2).
    FsType {
        /// 1: read-only squashfs.
        Squashfs = 1 => "Squashfs",
        /// 2: read-write ext3 (writable overlays; marked deprecated by the reference).
        Ext3 = 2 => "Ext3",
        /// 3: immutable object archive (displayed `Archive`).
        ImmuObj = 3 => "Archive",
        /// 4: raw bytes, no filesystem.
        Raw = 4 => "Raw",
        /// 5: encrypted squashfs (`singularity build --encrypt`).
        EncryptedSquashfs = 5 => "Encrypted squashfs",
    }
);

code_enum!(
    /// Partition type (`Parttype`, Extra bytes 4..8 of a partition; spec 4.2).
    PartType {
        /// 1: a system partition that is not the primary one.
        System = 1 => "System",
        /// 2: the primary system partition, the root filesystem (at most one per image;
        /// its arch is copied into the header).
        PrimSys = 2 => "*System",
        /// 3: a data partition, usable for image bind mounts.
        Data = 3 => "Data",
        /// 4: an overlay partition layered over the root filesystem (spec 10).
        Overlay = 4 => "Overlay",
    }
);

code_enum!(
    /// Signature hash type (`Hashtype`, Extra bytes 0..4 of a signature; spec 4.3).
    HashType {
        /// 1: SHA-256.
        Sha256 = 1 => "SHA-256",
        /// 2: SHA-384.
        Sha384 = 2 => "SHA-384",
        /// 3: SHA-512.
        Sha512 = 3 => "SHA-512",
        /// 4: BLAKE2s-256.
        Blake2s256 = 4 => "BLAKE2s-256",
        /// 5: BLAKE2b-256.
        Blake2b256 = 5 => "BLAKE2b-256",
    }
);

code_enum!(
    /// Crypto message format (`Formattype`, Extra bytes 0..4 of a crypto message; spec 4.4).
    FormatType {
        /// 1: OpenPGP.
        OpenPgp = 1 => "OpenPGP",
        /// 2: PEM (SingularityCE's wrapped image key).
        Pem = 2 => "PEM",
    }
);

code_enum!(
    /// Crypto message type (`Messagetype`, Extra bytes 4..8 of a crypto message; spec 4.4).
    MessageType {
        /// `0x100`: an OpenPGP clear-signed message.
        ClearSignature = 0x100 => "Clear Signature",
        /// `0x200`: an RSA-OAEP encrypted key (PEM).
        RsaOaep = 0x200 => "RSA-OAEP",
    }
);

code_enum!(
    /// SBOM format (`Format`, Extra bytes 0..4 of an SBOM object; spec 4.5).
    SbomFormat {
        /// 1: CycloneDX JSON.
        CycloneDxJson = 1 => "cyclonedx-json",
        /// 2: CycloneDX XML.
        CycloneDxXml = 2 => "cyclonedx-xml",
        /// 3: GitHub dependency snapshot JSON.
        GithubJson = 3 => "github-json",
        /// 4: SPDX JSON.
        SpdxJson = 4 => "spdx-json",
        /// 5: SPDX RDF.
        SpdxRdf = 5 => "spdx-rdf",
        /// 6: SPDX tag-value.
        SpdxTagValue = 6 => "spdx-tag-value",
        /// 7: SPDX YAML.
        SpdxYaml = 7 => "spdx-yaml",
        /// 8: Syft JSON.
        SyftJson = 8 => "syft-json",
    }
);

/// Architecture codes (header `Arch` and partition Extra `Arch`, spec 2.1), stored as two
/// ASCII digits and a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `00`: unknown, or no primary partition.
    Unknown,
    /// `01`: 386.
    I386,
    /// `02`: amd64.
    Amd64,
    /// `03`: arm.
    Arm,
    /// `04`: arm64.
    Arm64,
    /// `05`: ppc64.
    Ppc64,
    /// `06`: ppc64le.
    Ppc64le,
    /// `07`: mips.
    Mips,
    /// `08`: mipsle.
    Mipsle,
    /// `09`: mips64.
    Mips64,
    /// `10`: mips64le.
    Mips64le,
    /// `11`: s390x.
    S390x,
    /// `12`: riscv64.
    Riscv64,
    /// `13`: loong64.
    Loong64,
}

const ARCHES: [(Arch, &[u8; 2], &str); 14] = [
    (Arch::Unknown, b"00", "unknown"),
    (Arch::I386, b"01", "386"),
    (Arch::Amd64, b"02", "amd64"),
    (Arch::Arm, b"03", "arm"),
    (Arch::Arm64, b"04", "arm64"),
    (Arch::Ppc64, b"05", "ppc64"),
    (Arch::Ppc64le, b"06", "ppc64le"),
    (Arch::Mips, b"07", "mips"),
    (Arch::Mipsle, b"08", "mipsle"),
    (Arch::Mips64, b"09", "mips64"),
    (Arch::Mips64le, b"10", "mips64le"),
    (Arch::S390x, b"11", "s390x"),
    (Arch::Riscv64, b"12", "riscv64"),
    (Arch::Loong64, b"13", "loong64"),
];

impl Arch {
    /// Decode the 3-byte field; anything not in the table reads as unknown.
    pub fn from_bytes(bytes: &[u8]) -> Arch {
        ARCHES
            .iter()
            .find(|(_, code, _)| bytes.len() >= 3 && &bytes[..2] == *code && bytes[2] == 0)
            .map_or(Arch::Unknown, |(a, _, _)| *a)
    }

    /// Encode as the 3-byte field: two ASCII digits and a NUL, e.g. `02\0` for amd64.
    pub fn to_bytes(self) -> [u8; 3] {
        let code = ARCHES.iter().find(|(a, _, _)| *a == self).unwrap().1;
        [code[0], code[1], 0]
    }

    /// The Go architecture name (`amd64`, `386`, ...), as `siftool` prints it.
    pub fn go_name(self) -> &'static str {
        ARCHES.iter().find(|(a, _, _)| *a == self).unwrap().2
    }

    /// The code for a Go architecture name; `None` if the name is not in the table.
    pub fn from_go_name(name: &str) -> Option<Arch> {
        ARCHES
            .iter()
            .find(|(_, _, n)| *n == name)
            .map(|(a, _, _)| *a)
    }

    /// The architecture this program runs on (`Unknown` if SIF has no code for it).
    pub fn host() -> Arch {
        let go = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "loongarch64" => "loong64",
            other => other,
        };
        Arch::from_go_name(go).unwrap_or(Arch::Unknown)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.go_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0x4001..=0x400B {
            assert_eq!(DataType::from_code(code).code(), code);
        }
        assert_eq!(DataType::from_code(7), DataType::Unknown(7));
        assert_eq!(Arch::from_bytes(b"02\0"), Arch::Amd64);
        assert_eq!(Arch::Amd64.to_bytes(), *b"02\0");
        assert_eq!(Arch::from_bytes(b"99\0"), Arch::Unknown);
        assert_eq!(FsType::from_code(2).display_name(), Some("Ext3"));
        assert_eq!(PartType::PrimSys.display_name(), Some("*System"));
    }
}
