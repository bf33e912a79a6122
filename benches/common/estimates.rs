//! Reading criterion's results back: the median of each benchmark that ran
//! in this process, for the ratio tables the bench targets end with.
//! Included by each bench target with `#[path]`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where criterion writes its results (the same search it does).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    // The bench binary is target/<profile>/deps/pool-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median time (ns) of `group/id` if criterion wrote it during this run:
/// `median.point_estimate` of its `new/estimates.json`.
pub fn median_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let median = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|json| json.pointer("/median/point_estimate")?.as_f64());
    if median.is_none() {
        eprintln!("summary: no median in {}", path.display());
    }
    median
}

pub fn fmt_time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}
