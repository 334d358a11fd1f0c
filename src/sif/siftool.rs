//! The text the reference `siftool` prints for `header`, `list` and `info`, byte for byte
//! (scripts parse it), and JSON views of the same facts for `--json`.

use serde::Serialize;

use super::container::Container;
use super::raw::{Descriptor, GO_ZERO_TIME, Link};
use super::types::{DataType, FormatType, MessageType, SbomFormat};
use crate::error::Result;

/// `siftool`'s readable size: `847 B`, `27 KiB`, `1024 KiB` (its unit choice quirk included).
pub fn readable_size(size: i64) -> String {
    if -1024 < size && size < 1024 {
        return format!("{size} B");
    }
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    let mut n = size / 1024;
    let mut div: i64 = 1024;
    let mut unit = 0;
    while (n >= 1024 || n <= -1024) && unit + 1 < UNITS.len() {
        div = div.saturating_mul(1024);
        unit += 1;
        n /= 1024;
    }
    let value = (size as f64 / div as f64).round(); // f64::round rounds half away from zero
    format!("{} {}iB", value as i64, UNITS[unit])
}

/// `YYYY-MM-DD HH:MM:SS +0000 UTC` for any Unix time, as Go prints it.
pub fn format_time(t: i64) -> String {
    let (year, month, day, hour, minute, second) = crate::time::civil_utc(t);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} +0000 UTC")
}

fn uuid_text(id: &[u8; 16]) -> String {
    let h = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Go `text/tabwriter` for blocks whose lines all have the same number of cells: every
/// cell but the last is padded to the column's widest cell plus `padding`.
fn tabwrite(lines: &[Vec<String>], padding: usize) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in lines {
        for (i, cell) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            if i + 1 < line.len() {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] + padding - cell.chars().count()));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

/// `siftool header`.
pub fn header(c: &Container) -> String {
    let h = c.header();
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut line = |label: &str, value: String| lines.push(vec![format!("{label}:"), value]);
    let launch = h.launch_script_text();
    if !launch.is_empty() {
        line(
            "Launch Script",
            launch.strip_suffix('\n').unwrap_or(&launch).to_string(),
        );
    }
    line("Version", "01".into());
    if h.arch != super::Arch::Unknown {
        line("Primary Architecture", h.arch.go_name().into());
    }
    if h.id != [0; 16] {
        line("ID", uuid_text(&h.id));
    }
    if h.created_at != GO_ZERO_TIME {
        line("Created At", format_time(h.created_at));
    }
    if h.modified_at != GO_ZERO_TIME {
        line("Modified At", format_time(h.modified_at));
    }
    line("Descriptors Free", h.descriptors_free.to_string());
    line("Descriptors Total", h.descriptors_total.to_string());
    line("Descriptors Offset", h.descriptors_offset.to_string());
    line("Descriptors Size", readable_size(h.descriptors_size));
    line("Data Offset", h.data_offset.to_string());
    line("Data Size", readable_size(h.data_size));
    tabwrite(&lines, 1)
}

/// The type-specific suffix of a `list` row; `None` when the Extra cannot be decoded (the
/// reference then prints no type and no newline).
fn type_text(d: &Descriptor) -> Option<String> {
    let name = d.data_type.display_name();
    Some(match d.data_type {
        DataType::Partition => {
            let p = d.partition().ok()?;
            format!(
                "{name} ({}/{}/{})",
                p.fs_type.display_name()?,
                p.part_type.display_name()?,
                p.arch.go_name()
            )
        }
        DataType::Signature => format!("{name} ({})", d.signature_hash().display_name()?),
        DataType::CryptoMessage => format!(
            "{name} ({}/{})",
            FormatType::from_code(d.extra_code(0)).display_name()?,
            MessageType::from_code(d.extra_code(4)).display_name()?
        ),
        DataType::Sbom => format!(
            "{name} ({})",
            SbomFormat::from_code(d.extra_code(0))
                .display_name()
                .unwrap_or("unknown")
        ),
        _ => name.to_string(),
    })
}

/// `siftool list`.
pub fn list(c: &Container) -> String {
    let rule = "-".repeat(78);
    let mut out = format!(
        "{rule}\n{:<4} {:<8} {:<8} {:<26} {}\n{rule}\n",
        "ID", "|GROUP", "|LINK", "|SIF POSITION (start-end)", "|TYPE"
    );
    for d in c.objects() {
        let group = match d.group() {
            None => "NONE".to_string(),
            Some(g) => g.to_string(),
        };
        let link = match d.link() {
            Link::None => format!("{:<7}", "NONE"),
            Link::Group(g) => format!("{g:<3} (G)"),
            Link::Object(o) => format!("{o:<7}"),
        };
        let position = format!("|{}-{} ", d.offset, d.end());
        out.push_str(&format!(
            "{:<4} |{:<7} |{link} {position:<26} ",
            d.id, group
        ));
        if let Some(t) = type_text(d) {
            out.push('|');
            out.push_str(&t);
            out.push('\n');
        }
    }
    out
}

/// `siftool info ID`.
pub fn info(c: &Container, id: u32) -> Result<String> {
    let d = c.object(id)?;
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut line =
        |label: &str, value: String| lines.push(vec![String::new(), format!("{label}:"), value]);
    line("Data Type", d.data_type.display_name().into());
    line("ID", d.id.to_string());
    line(
        "Group ID",
        d.group().map_or("NONE".into(), |g| g.to_string()),
    );
    line(
        "Linked ID",
        match d.link() {
            Link::None => "NONE".into(),
            Link::Group(g) => format!("{g} (G)"),
            Link::Object(o) => o.to_string(),
        },
    );
    line("Offset", d.offset.to_string());
    line("Size", d.size.to_string());
    if d.created_at != GO_ZERO_TIME {
        line("Created At", format_time(d.created_at));
    }
    if d.modified_at != GO_ZERO_TIME {
        line("Modified At", format_time(d.modified_at));
    }
    if !d.name.is_empty() {
        line("Name", String::from_utf8_lossy(&d.name).into_owned());
    }
    match d.data_type {
        DataType::Partition => {
            let p = d.partition()?;
            line(
                "Filesystem Type",
                p.fs_type.display_name().unwrap_or("Unknown").into(),
            );
            line(
                "Partition Type",
                p.part_type.display_name().unwrap_or("Unknown").into(),
            );
            line("Architecture", p.arch.go_name().into());
        }
        DataType::Signature => {
            let hash = d.signature_hash().display_name().ok_or_else(|| {
                crate::error::Error::malformed(format!("object {id}: hash algorithm unsupported"))
            })?;
            line("Hash Type", hash.into());
            if let Some(fp) = d.signature_entity() {
                line("Entity", hex::encode_upper(fp));
            }
        }
        DataType::CryptoMessage => {
            line(
                "Format Type",
                FormatType::from_code(d.extra_code(0))
                    .display_name()
                    .unwrap_or("Unknown")
                    .into(),
            );
            line(
                "Message Type",
                MessageType::from_code(d.extra_code(4))
                    .display_name()
                    .unwrap_or("Unknown")
                    .into(),
            );
        }
        DataType::Sbom => {
            line(
                "Format",
                SbomFormat::from_code(d.extra_code(0))
                    .display_name()
                    .unwrap_or("unknown")
                    .into(),
            );
        }
        DataType::OciRootIndex | DataType::OciBlob => line("Digest", d.oci_digest()?.to_string()),
        _ => {}
    }
    Ok(tabwrite(&lines, 2))
}

/// JSON view of one descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectJson {
    /// Object ID.
    pub id: u32,
    /// Data type display name, as `siftool` prints it (`FS`, `OCI.Blob`, ...).
    pub data_type: String,
    /// Numeric data type code (`0x4001`..`0x400B`).
    pub data_type_code: i32,
    /// Group number; `None` for no group.
    pub group: Option<u32>,
    /// ID of the linked object, for an object link.
    pub linked_object: Option<u32>,
    /// Linked group number, for a group link.
    pub linked_group: Option<u32>,
    /// Byte offset of the object from the start of the file.
    pub offset: u64,
    /// Object length in bytes.
    pub size: u64,
    /// `size` plus the alignment padding before the object, in bytes.
    pub size_with_padding: u64,
    /// Creation time, Unix seconds; `None` for the Go zero time.
    pub created_at: Option<i64>,
    /// Modification time, Unix seconds; `None` for the Go zero time.
    pub modified_at: Option<i64>,
    /// Object name (lossy UTF-8); empty for none.
    pub name: String,
    /// Type-specific facts (partition fs/part/arch, signature hash/entity, digest, ...).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ObjectJson {
    /// The view of one used descriptor; undecodable Extra just leaves `details` short.
    pub fn new(d: &Descriptor) -> ObjectJson {
        use serde_json::Value;
        let mut details = serde_json::Map::new();
        match d.data_type {
            DataType::Partition => {
                if let Ok(p) = d.partition() {
                    details.insert(
                        "filesystem".into(),
                        Value::from(p.fs_type.display_name().unwrap_or("Unknown")),
                    );
                    details.insert(
                        "partition".into(),
                        Value::from(p.part_type.display_name().unwrap_or("Unknown")),
                    );
                    details.insert("architecture".into(), Value::from(p.arch.go_name()));
                }
            }
            DataType::Signature => {
                details.insert(
                    "hash".into(),
                    Value::from(d.signature_hash().display_name().unwrap_or("unknown")),
                );
                if let Some(fp) = d.signature_entity() {
                    details.insert("entity".into(), Value::from(hex::encode_upper(fp)));
                }
            }
            DataType::Sbom => {
                details.insert(
                    "format".into(),
                    Value::from(
                        SbomFormat::from_code(d.extra_code(0))
                            .display_name()
                            .unwrap_or("unknown"),
                    ),
                );
            }
            DataType::CryptoMessage => {
                details.insert(
                    "format".into(),
                    Value::from(
                        FormatType::from_code(d.extra_code(0))
                            .display_name()
                            .unwrap_or("Unknown"),
                    ),
                );
                details.insert(
                    "message".into(),
                    Value::from(
                        MessageType::from_code(d.extra_code(4))
                            .display_name()
                            .unwrap_or("Unknown"),
                    ),
                );
            }
            DataType::OciRootIndex | DataType::OciBlob => {
                if let Ok(digest) = d.oci_digest() {
                    details.insert("digest".into(), Value::from(digest.to_string()));
                }
            }
            _ => {}
        }
        let time = |t: i64| (t != GO_ZERO_TIME).then_some(t);
        ObjectJson {
            id: d.id,
            data_type: d.data_type.display_name().into(),
            data_type_code: d.data_type.code(),
            group: d.group(),
            linked_object: match d.link() {
                Link::Object(o) => Some(o),
                _ => None,
            },
            linked_group: match d.link() {
                Link::Group(g) => Some(g),
                _ => None,
            },
            offset: d.offset,
            size: d.size,
            size_with_padding: d.size_with_padding,
            created_at: time(d.created_at),
            modified_at: time(d.modified_at),
            name: String::from_utf8_lossy(&d.name).into_owned(),
            details,
        }
    }
}

/// JSON view of the header.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderJson {
    /// Launch script with trailing NULs trimmed; empty for none.
    pub launch_script: String,
    /// Spec version, always `01`.
    pub version: String,
    /// Go name of the primary architecture; `None` when unknown.
    pub primary_architecture: Option<String>,
    /// Image UUID as text; `None` for the nil UUID.
    pub id: Option<String>,
    /// Creation time, Unix seconds; `None` for the Go zero time.
    pub created_at: Option<i64>,
    /// Modification time, Unix seconds; `None` for the Go zero time.
    pub modified_at: Option<i64>,
    /// Number of unused descriptor slots.
    pub descriptors_free: i64,
    /// Number of descriptor slots (capacity).
    pub descriptors_total: i64,
    /// Byte offset of the descriptor table from the start of the file.
    pub descriptors_offset: i64,
    /// Size of the descriptor table in bytes.
    pub descriptors_size: i64,
    /// Byte offset of the data section from the start of the file.
    pub data_offset: i64,
    /// Bytes of the data section in use.
    pub data_size: i64,
}

impl HeaderJson {
    /// The view of an image's header.
    pub fn new(c: &Container) -> HeaderJson {
        let h = c.header();
        let time = |t: i64| (t != GO_ZERO_TIME).then_some(t);
        HeaderJson {
            launch_script: h.launch_script_text(),
            version: "01".into(),
            primary_architecture: (h.arch != super::Arch::Unknown)
                .then(|| h.arch.go_name().to_string()),
            id: (h.id != [0; 16]).then(|| uuid_text(&h.id)),
            created_at: time(h.created_at),
            modified_at: time(h.modified_at),
            descriptors_free: h.descriptors_free,
            descriptors_total: h.descriptors_total,
            descriptors_offset: h.descriptors_offset,
            descriptors_size: h.descriptors_size,
            data_offset: h.data_offset,
            data_size: h.data_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_print_like_siftool() {
        assert_eq!(readable_size(28080), "27 KiB");
        assert_eq!(readable_size(8784), "9 KiB");
        assert_eq!(readable_size(2047), "2 KiB");
        assert_eq!(readable_size(847), "847 B");
        assert_eq!(readable_size(1048575), "1024 KiB");
        assert_eq!(readable_size(1 << 20), "1 MiB");
        assert_eq!(format_time(1593475316), "2020-06-30 00:01:56 +0000 UTC");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_time(GO_ZERO_TIME), "0001-01-01 00:00:00 +0000 UTC");
    }
}
