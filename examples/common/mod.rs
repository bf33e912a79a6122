//! What both examples share: byte sizes and run lengths on the command line
//! (as clap value parsers) and byte sizes in their summaries.
//!
//! Included with `mod common;` (or `#[path]`); cargo does not build
//! `examples/common/mod.rs` as an example of its own.

use std::time::Duration;

/// `4096`, `64K`, `64k`, `1M`, `1MiB`, `2G`: bytes.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a byte count: {s:?}"))?;
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown byte suffix in {s:?} (use K, M or G)")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("byte count overflows: {s:?}"))
}

/// A byte count that is a multiple of the host page, as the pool's
/// keep-resident sizes must be.
pub fn parse_page_multiple(s: &str) -> Result<usize, String> {
    let n = parse_bytes(s)?;
    let page = instance_pool::host_page_size();
    if n.is_multiple_of(page) {
        Ok(n)
    } else {
        Err(format!(
            "{n} bytes is not a multiple of the host page ({page})"
        ))
    }
}

/// The longest run a flag may ask for: a day (so that `now + run` is
/// always representable).
pub const MAX_SECONDS: u64 = 86_400;

/// A positive number of seconds (`3`, `0.5`), at most [`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(MAX_SECONDS))
        .ok_or_else(|| format!("not a positive number of seconds up to {MAX_SECONDS}: {s:?}"))
}

/// `512 B`, `9.9 KiB`, `1.0 MiB`, `4.00 GiB`: bytes for a summary.
pub fn fmt_bytes(b: f64) -> String {
    match b.abs() {
        a if a >= (1u64 << 30) as f64 => format!("{:.2} GiB", b / (1u64 << 30) as f64),
        a if a >= (1 << 20) as f64 => format!("{:.1} MiB", b / (1 << 20) as f64),
        a if a >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        _ => format!("{b:.0} B"),
    }
}
