//! SIF enumerations with the reference's numeric codes and display names.

use std::fmt;

/// Object data types (`DataType`), spec section 4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Deffile,
    EnvVar,
    Labels,
    Partition,
    Signature,
    GenericJson,
    Generic,
    CryptoMessage,
    Sbom,
    OciRootIndex,
    OciBlob,
    Unknown(i32),
}

impl DataType {
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
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:expr => $display:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            Unknown(i32),
        }

        impl $name {
            pub fn from_code(code: i32) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

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
    /// Partition filesystem type (spec 4.2).
    FsType {
        Squashfs = 1 => "Squashfs",
        Ext3 = 2 => "Ext3",
        ImmuObj = 3 => "Archive",
        Raw = 4 => "Raw",
        EncryptedSquashfs = 5 => "Encrypted squashfs",
    }
);

code_enum!(
    /// Partition type (spec 4.2).
    PartType {
        System = 1 => "System",
        PrimSys = 2 => "*System",
        Data = 3 => "Data",
        Overlay = 4 => "Overlay",
    }
);

code_enum!(
    /// Signature hash type (spec 4.3).
    HashType {
        Sha256 = 1 => "SHA-256",
        Sha384 = 2 => "SHA-384",
        Sha512 = 3 => "SHA-512",
        Blake2s256 = 4 => "BLAKE2s-256",
        Blake2b256 = 5 => "BLAKE2b-256",
    }
);

code_enum!(
    /// Crypto message format (spec 4.4).
    FormatType {
        OpenPgp = 1 => "OpenPGP",
        Pem = 2 => "PEM",
    }
);

code_enum!(
    /// Crypto message type (spec 4.4).
    MessageType {
        ClearSignature = 0x100 => "Clear Signature",
        RsaOaep = 0x200 => "RSA-OAEP",
    }
);

code_enum!(
    /// SBOM format (spec 4.5).
    SbomFormat {
        CycloneDxJson = 1 => "cyclonedx-json",
        CycloneDxXml = 2 => "cyclonedx-xml",
        GithubJson = 3 => "github-json",
        SpdxJson = 4 => "spdx-json",
        SpdxRdf = 5 => "spdx-rdf",
        SpdxTagValue = 6 => "spdx-tag-value",
        SpdxYaml = 7 => "spdx-yaml",
        SyftJson = 8 => "syft-json",
    }
);

/// Architecture codes (spec 2.1), stored as two ASCII digits and a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Unknown,
    I386,
    Amd64,
    Arm,
    Arm64,
    Ppc64,
    Ppc64le,
    Mips,
    Mipsle,
    Mips64,
    Mips64le,
    S390x,
    Riscv64,
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

    pub fn to_bytes(self) -> [u8; 3] {
        let code = ARCHES.iter().find(|(a, _, _)| *a == self).unwrap().1;
        [code[0], code[1], 0]
    }

    /// The Go architecture name.
    pub fn go_name(self) -> &'static str {
        ARCHES.iter().find(|(a, _, _)| *a == self).unwrap().2
    }

    pub fn from_go_name(name: &str) -> Option<Arch> {
        ARCHES
            .iter()
            .find(|(_, _, n)| *n == name)
            .map(|(a, _, _)| *a)
    }

    /// The architecture this program runs on.
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
