//! Sizes as people write them: `1G`, `512M`, `128K`, `1.5GiB`, or a plain number in the
//! option's own unit.

/// Bytes of a size with an optional binary suffix (K, M, G, T, with or without `iB`/`B`);
/// a plain number is in units of `plain_unit` bytes.
fn bytes(text: &str, plain_unit: u64) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let unit: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" => plain_unit,
        "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use K, M, G or T, powers of 1024)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a size (examples: 512M, 1G, 131072)"))?;
    let total = value * unit as f64;
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 {
        return Err(format!("{text:?}: out of range"));
    }
    if total.fract() != 0.0 {
        return Err(format!("{text:?}: not a whole number of bytes"));
    }
    Ok(total as u64)
}

/// A size in MiB (`--size`): `1G`, `512M`, `1.5G`, or a plain number of MiB.
pub fn mib(text: &str) -> Result<u64, String> {
    let b = bytes(text, 1 << 20)?;
    if b % (1 << 20) != 0 {
        return Err(format!("{text:?}: not a whole number of MiB"));
    }
    Ok(b >> 20)
}

/// A block size in bytes (`--block-size`): `128K`, `1M`, or a plain number of bytes.
pub fn block(text: &str) -> Result<u32, String> {
    let b = bytes(text, 1)?;
    u32::try_from(b).map_err(|_| format!("{text:?}: larger than any block size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(mib("64"), Ok(64));
        assert_eq!(mib("1G"), Ok(1024));
        assert_eq!(mib("1.5GiB"), Ok(1536));
        assert_eq!(mib("512M"), Ok(512));
        assert!(mib("100K").is_err());
        assert!(mib("12X").unwrap_err().contains("unknown unit"));
        assert!(mib("lots").is_err());
        assert_eq!(block("128K"), Ok(131072));
        assert_eq!(block("131072"), Ok(131072));
        assert_eq!(block("1M"), Ok(1 << 20));
        assert!(block("8G").is_err());
    }
}
