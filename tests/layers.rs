//! The crate's layers go one way (`../shared/DESIGN.md`, "Architecture"):
//! a module imports only modules of lower layers, and the files of one
//! folder import each other without a cycle. This reads `src/` and checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module; a module may import lower numbers only
/// (the leaves, layer 1, may also import each other).
fn layer(module: &str) -> Option<u32> {
    Some(match module {
        "sys" => 0,
        "error" | "config" | "layout" | "image" | "lib" => 1,
        "slot" => 2,
        "allocator" => 3,
        "limits" => 4,
        "store" => 5,
        "memory" | "table" => 6,
        // Engine adapters (features): on top of everything.
        "wasmtime" => 7,
        _ => return None,
    })
}

/// The module each name the crate root re-exports comes from.
fn home_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "Error" | "Resource" => "error",
        "Result" | "WASM_PAGE_SIZE" | "host_page_size" | "kernel_mappings" => "lib",
        "PoolingConfig" | "MemoryProtection" | "MemoryLayout" | "DENSE_MAX_STRIDE"
        | "StackPoolConfig" => "config",
        "MemoryImage" => "image",
        "InstanceLayout" | "MemoryType" | "TableType" => "layout",
        "ResourceLimiter"
        | "ResourceLimiterAsync"
        | "StoreLimits"
        | "StoreLimitsBuilder"
        | "LimiterFuture" => "limits",
        "InstanceAllocator"
        | "PoolingInstanceAllocator"
        | "OnDemandInstanceAllocator"
        | "PoolMetrics"
        | "StackPool"
        | "PooledStack"
        | "StackPoolMetrics" => "allocator",
        "Store" | "Instance" => "store",
        "Memory" => "memory",
        "Table" => "table",
        "Syscall" | "fault" => "sys",
        m if layer(m).is_some() => return None,
        _ => panic!("tests/layers.rs: `crate::{name}` has no known home; add it"),
    })
}

/// Code lines of a file: comments (including doc comments) dropped.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path after `prefix` (`crate::` or
/// `super::`), with `prefix{a, b::c}` groups expanded.
fn imports(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            // Top-level items of the group only.
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let first = item.trim().split("::").next().unwrap_or("").trim();
                        if !first.is_empty() && first != "self" {
                            out.insert(first.to_string());
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/slot/memory.rs` -> `slot`; `src/store.rs` -> `store`.
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_imports_a_module_of_a_higher_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for path in &files {
        let me = top_module(path);
        let my_layer = layer(&me).unwrap_or_else(|| panic!("{me}: no layer; add it"));
        for name in imports(&code(path), "crate::") {
            let home = home_of(&name).unwrap_or(&name).to_string();
            if home == me || home == "lib" {
                continue;
            }
            let their = layer(&home).unwrap();
            if their > my_layer || (their == my_layer && my_layer != 1) {
                wrong.push(format!("{} imports crate::{name} ({home})", path.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_files_of_one_folder_import_each_other_without_a_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    // Edges between sibling files: `super::x` from one file of a folder to
    // its sibling `x.rs`. A file may use its folder's `mod.rs` (the
    // folder's own types), which is what a parent is for.
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for path in &files {
        let dir = path.parent().unwrap();
        if path
            .file_name()
            .is_some_and(|f| f == "mod.rs" || f == "tests.rs")
        {
            continue;
        }
        // `super::*` is an inline test module's view of its own file.
        for name in imports(&code(path), "super::")
            .into_iter()
            .filter(|n| !n.is_empty())
        {
            let sibling = dir.join(format!("{name}.rs"));
            if sibling.exists() {
                edges.entry(path.clone()).or_default().insert(sibling);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        on_path: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = on_path.iter().position(|p| p == node) {
            return Some(on_path[at..].to_vec());
        }
        if !done.insert(node.clone()) {
            return None;
        }
        on_path.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, on_path, done) {
                return Some(cycle);
            }
        }
        on_path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let cycle = visit(node, &edges, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "import cycle: {cycle:?}");
    }
}

#[test]
fn the_import_reader_sees_groups_and_nested_paths() {
    let found = imports(
        "use crate::{a, b::{c, d}, self};\nuse crate::e::F;",
        "crate::",
    );
    assert_eq!(found, ["a", "b", "e"].map(String::from).into());
}

/// Unsafe code lives in `sys` and the slot layer (issue 18); an engine
/// adapter may only implement the engine's `unsafe` traits, whose promises
/// rest on the slot layer's invariants.
#[test]
fn unsafe_code_lives_in_sys_and_the_slot_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut outside = Vec::new();
    for path in &files {
        let top = top_module(path);
        if top == "sys" || top == "slot" {
            continue;
        }
        for (n, line) in code(path).lines().enumerate() {
            let allowed = top == "wasmtime" && line.trim_start().starts_with("unsafe impl ");
            if line.contains("unsafe") && !allowed {
                outside.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "unsafe outside sys/ and slot/:\n{}",
        outside.join("\n")
    );
}

/// One concern a file: none in `src/` grows past 400 lines (issue 18).
#[test]
fn no_source_file_is_over_400_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<_> = files
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).unwrap().lines().count()))
        .filter(|&(_, n)| n > 400)
        .map(|(p, n)| format!("{}: {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}
