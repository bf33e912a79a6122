//! The ratio table `cargo bench --bench pool` ends with, computed from the
//! medians criterion wrote during this run (its `estimates.json` files).

use crate::IMAGE_SIZES;
use crate::estimates::{criterion_dir, fmt_time, median_ns};
use std::time::SystemTime;

/// Prints, as Markdown, the ratios the README quotes, from the medians of
/// the benchmarks that ran in this process (a group that did not run is
/// left out).
pub fn summary(since: SystemTime) {
    let dir = criterion_dir();
    let t = |id: &str| median_ns(&dir, id, since);
    // `what` is true of the ratio t(num) / t(den); `target` is
    // (bound, whether the ratio must be at least the bound).
    let ratio = |what: &str, num: &str, den: &str, target: Option<(f64, bool)>| {
        let (n, d) = (t(num)?, t(den)?);
        let r = n / d;
        let verdict = match target {
            Some((bound, at_least)) => {
                let sign = if at_least { ">=" } else { "<=" };
                let met = if (r >= bound) == at_least {
                    "met"
                } else {
                    "MISSED"
                };
                format!(" (target {sign} {bound}x: {met})")
            }
            None => String::new(),
        };
        Some(format!(
            "| {what} | **{r:.2}x**{verdict} | {} / {} |",
            fmt_time(n),
            fmt_time(d)
        ))
    };
    let mut lines = Vec::new();
    let cycle = |id: &str| format!("cycle/{id}");
    for (name, label, target) in [
        (
            "pool_keep_resident",
            "pool+keep-resident",
            Some((5.0, true)),
        ),
        ("pool_batched", "pool batched", None),
        ("pool_default", "pool default", None),
        ("raw_memset_madvise", "raw memset+madvise floor", None),
        ("raw_mmap_munmap", "raw mmap/munmap floor", None),
    ] {
        lines.extend(ratio(
            &format!("cycle: {label} is faster than on-demand by"),
            &cycle("on_demand"),
            &cycle(name),
            target,
        ));
    }
    for (reset, full, label) in [
        (
            "pool_keep_resident_reset",
            "pool_keep_resident",
            "keep-resident",
        ),
        ("pool_default_reset", "pool_default", "default"),
    ] {
        lines.extend(ratio(
            &format!("cycle: Store::reset is faster than drop + instantiate ({label} pool) by"),
            &cycle(full),
            &cycle(reset),
            None,
        ));
    }
    for (name, label, target) in [
        (
            "pool_keep_resident",
            "pool+keep-resident",
            Some((3.0, false)),
        ),
        ("pool_batched", "pool batched", None),
    ] {
        lines.extend(ratio(
            &format!("cycle: {label} costs this much of the raw memset+madvise floor"),
            &cycle(name),
            &cycle("raw_memset_madvise"),
            target,
        ));
    }
    // Guard markers against the mprotect path and against their own floor.
    for (name, den, what, target) in [
        (
            "pool_keep_resident",
            "pool_keep_resident_mprotect",
            "pool+keep-resident with guard markers costs this much of the mprotect path",
            Some((0.5, false)),
        ),
        (
            "pool_default",
            "pool_default_mprotect",
            "pool default with guard markers costs this much of the mprotect path",
            None,
        ),
        (
            "pool_batched",
            "pool_batched_mprotect",
            "pool batched with guard markers costs this much of the mprotect path",
            None,
        ),
        (
            "pool_bounds_checked",
            "pool_keep_resident_mprotect",
            "pool+keep-resident, bounds-checked mode, costs this much of the mprotect path",
            Some((0.3, false)),
        ),
        (
            "pool_default_background",
            "pool_default",
            "pool default, revoking on a background thread, costs this much of revoking inline",
            None,
        ),
        (
            "pool_bounds_checked_default",
            "pool_default_mprotect",
            "pool default, bounds-checked mode, costs this much of the mprotect path",
            None,
        ),
        (
            "pool_keep_resident",
            "raw_guard_markers",
            "pool+keep-resident costs this much of the raw guard-marker floor",
            Some((1.3, false)),
        ),
        (
            "pool_keep_resident_batched",
            "raw_guard_markers_batched",
            "pool+keep-resident, batches of 16, costs this much of the raw batched floor",
            Some((1.3, false)),
        ),
    ] {
        lines.extend(ratio(
            &format!("cycle: {what}"),
            &cycle(name),
            &cycle(den),
            target,
        ));
    }
    // Throughput: an iteration is one cycle per thread, so 2 threads do
    // twice the work per iteration.
    let scaling = |name: &str| {
        let one = t(&format!("cycle_threads/{name}/1"))?;
        let two = t(&format!("cycle_threads/{name}/2"))?;
        let (tp1, tp2) = (1e9 / one, 2e9 / two);
        Some((tp2 / tp1, tp1, tp2))
    };
    for name in [
        "pool_keep_resident",
        "pool_keep_resident_no_grow",
        "pool_keep_resident_batched",
        "pool_keep_resident_mprotect",
        "pool_batched",
        "pool_bounds_checked",
        "pool_bounds_checked_default",
        "pool_default",
        "pool_shipped",
        "pool_default_no_grow",
        "pool_default_background",
        "pool_default_mprotect",
        "on_demand",
        "raw_memset_madvise",
        "raw_guard_markers",
        "raw_guard_markers_batched",
        "raw_bounds_checked",
    ] {
        if let Some((r, tp1, tp2)) = scaling(name) {
            let target = match name {
                // The default pool as shipped (1,000 slots): `pool_default`
                // has 16, which cut its batches short.
                "pool_shipped" => Some(1.3),
                "pool_keep_resident_no_grow" | "pool_bounds_checked" => Some(1.8),
                _ => None,
            };
            let verdict = target.map_or(String::new(), |b| {
                format!(
                    " (target >= {b}x: {})",
                    if r >= b { "met" } else { "MISSED" }
                )
            });
            lines.push(format!(
                "| cycle_threads: {name}, 2 threads' throughput over 1 thread's | **{r:.2}x**{verdict} | {tp2:.0}/s / {tp1:.0}/s |"
            ));
        }
    }
    if let (Some((pool, ..)), Some((floor, ..))) = (
        scaling("pool_keep_resident_batched"),
        scaling("raw_guard_markers_batched"),
    ) {
        let r = pool / floor;
        let met = if r >= 0.9 { "met" } else { "MISSED" };
        lines.push(format!(
            "| cycle_threads: pool+keep-resident, batches of 16: its 2-over-1 scaling over the raw batched floor's | **{r:.2}x** (target >= 0.9x: {met}) | {pool:.2}x / {floor:.2}x |"
        ));
    }
    // The bounds-checked request against its own design's floor: the same
    // one PAGEMAP_SCAN a request (its `mmap_lock` and `mm_users` are the
    // process's, both cores write them), without the pool's bookkeeping.
    // The no-grow keep-resident request makes that same one syscall (no
    // protection changes: the page it writes is within its minimum), so
    // the same floor is its design's too.
    for (row, what) in [
        ("pool_bounds_checked", "bounds-checked"),
        ("pool_keep_resident_no_grow", "no-grow keep-resident"),
    ] {
        if let (Some((pool, ..)), Some((floor, ..))) = (scaling(row), scaling("raw_bounds_checked"))
        {
            lines.push(format!(
                "| cycle_threads: {what}: its 2-over-1 scaling over the raw bounds-checked floor's (one PAGEMAP_SCAN a request) | **{:.2}x** | {pool:.2}x / {floor:.2}x |",
                pool / floor
            ));
        }
    }
    for (_, name) in &IMAGE_SIZES[1..] {
        for alloc in [
            "pool",
            "pool_keep_resident",
            "pool_keep_resident_mprotect",
            "pool_image_switch",
            "on_demand",
        ] {
            let target = match (alloc, *name) {
                ("pool", "64MiB") => Some((2.0, false)),
                ("pool_keep_resident", "64MiB") => Some((1.5, false)),
                _ => None,
            };
            lines.extend(ratio(
                &format!("cold_start: {alloc}, {name} image costs this much of a 4KiB one"),
                &format!("cold_start/{alloc}/{name}"),
                &format!("cold_start/{alloc}/4KiB"),
                target,
            ));
        }
    }
    for (_, name) in &IMAGE_SIZES {
        lines.extend(ratio(
            &format!("cold_start: pool is faster than on-demand by, {name} image"),
            &format!("cold_start/on_demand/{name}"),
            &format!("cold_start/pool/{name}"),
            None,
        ));
    }
    for name in [
        "pool_default",
        "pool_default_mprotect",
        "pool_keep_resident",
    ] {
        lines.extend(ratio(
            &format!("grow 1 -> 160 pages: {name} is faster than on-demand by"),
            "grow/on_demand",
            &format!("grow/{name}"),
            None,
        ));
    }
    for (id, what) in [
        (
            "dense_100000",
            "100000 dense slots of 128 KiB + 64 KiB guard",
        ),
        (
            "dense_1000000",
            "1000000 dense slots of 128 KiB + 64 KiB guard",
        ),
        (
            "stacks_1000000",
            "StackPool of 1000000 stacks of 128 KiB + a guard page",
        ),
    ] {
        if let Some(ns) = t(&format!("pool_new/{id}")) {
            let met = if ns < 1e7 { "met" } else { "MISSED" };
            lines.push(format!(
                "| pool_new: new + drop, {what} | **{}** (target < 10 ms: {met}) | |",
                fmt_time(ns)
            ));
        }
    }
    for name in ["4KiB", "1MiB", "16MiB"] {
        lines.extend(ratio(
            &format!("cold_start: the dense layout (image copied) costs this much of the guarded pool's (mapped), {name} image"),
            &format!("cold_start/pool_dense/{name}"),
            &format!("cold_start/pool/{name}"),
            None,
        ));
    }
    for slots in ["1000", "10000"] {
        if let Some(ns) = t(&format!("pool_new/{slots}")) {
            let verdict = match (slots, ns < 1e6) {
                ("10000", true) => " (target < 1 ms: met)",
                ("10000", false) => " (target < 1 ms: MISSED)",
                _ => "",
            };
            lines.push(format!(
                "| pool_new: new + drop, {slots} slots of 4 GiB + 32 MiB guard | **{}**{verdict} | |",
                fmt_time(ns)
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!("\nRatios from this run (criterion medians; time A / time B):\n");
    println!("| comparison | ratio | A / B |");
    println!("|---|---|---|");
    for line in lines {
        println!("{line}");
    }
}
