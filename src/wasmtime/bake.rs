//! Reading a module's data segments into per-memory bytes, and the module
//! Wasmtime compiles instead: the same sections, with the baked segments
//! made empty passive ones.

use wasm_encoder::{DataSection, RawSection};
use wasmparser::{DataKind, Encoding, Operator, Parser, Payload, Validator, WasmFeatures};

/// Images whose span (from byte 0 to the end of the last segment) is at
/// most this many bytes are baked however sparse; larger ones only when the
/// data fills at least half of them. Wasmtime's own rule for its images
/// (`Config::memory_guaranteed_dense_image_size`, 16 MiB by default): a
/// module cannot make the host hold much more than its own size.
const DENSE_ENOUGH: u64 = 16 << 20;

/// The limits of a memory as Wasmtime's `new_memory` sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    pub minimum: u64,
    pub maximum: Option<u64>,
    pub memory64: bool,
    pub shared: bool,
    pub page_size_log2: u8,
}

impl Shape {
    pub fn of(ty: &wasmtime::MemoryType) -> Shape {
        Shape {
            minimum: ty.minimum(),
            maximum: ty.maximum(),
            memory64: ty.is_64(),
            shared: ty.is_shared(),
            page_size_log2: ty.page_size_log2(),
        }
    }

    fn parsed(ty: &wasmparser::MemoryType) -> Shape {
        Shape {
            minimum: ty.initial,
            maximum: ty.maximum,
            memory64: ty.memory64,
            shared: ty.shared,
            page_size_log2: ty.page_size_log2.map_or(16, |p| p.min(64) as u8),
        }
    }

    /// The minimum in bytes, if it fits a `u64`.
    pub fn min_bytes(&self) -> Option<u64> {
        self.minimum
            .checked_mul(1u64.checked_shl(self.page_size_log2.into())?)
    }

    /// Whether an image can stand for this memory's initial contents.
    pub fn takes_images(&self) -> bool {
        !self.shared && usize::from(self.page_size_log2) == crate::WASM_PAGE_SIZE.ilog2() as usize
    }
}

/// One memory the module defines (not imports).
#[derive(Debug)]
pub(super) struct Defined {
    pub shape: Shape,
    /// Where `data` starts in the memory: the lowest offset a non-empty
    /// segment writes (zeroes before it are not kept).
    pub start: usize,
    /// Its baked bytes from `start`, trailing zeroes cut (empty: none).
    pub data: Vec<u8>,
    /// An active segment targets it.
    pub segments: bool,
}

/// What [`bake`] made of a module.
#[derive(Debug)]
pub(super) struct Baked {
    /// The module Wasmtime should compile, when it differs from the input.
    pub rewritten: Option<Vec<u8>>,
    /// The memories the module defines, in index order (after imports).
    pub defined: Vec<Defined>,
    /// The module index of the first defined memory.
    pub imported: u32,
    /// Why the segments stay with Wasmtime, if they do.
    pub refused: Option<String>,
    /// Instances may ask for a GC heap (see [`may_use_gc_heap`]).
    pub gc_heap: bool,
}

/// Reads `wasm`'s memories and data segments. `None` if `wasm` is not a
/// core module wasmparser can read (Wasmtime then has its say on it).
///
/// A module is baked only whole: every active segment must have a constant
/// offset into a defined, unshared memory of 64 KiB pages, in bounds of its
/// minimum. Otherwise Wasmtime applies them all, in order, at
/// instantiation, and its result (a trap part-way included) is exactly its
/// own.
pub(super) fn bake(wasm: &[u8]) -> Option<Baked> {
    let mut imported = 0u32;
    let mut defined = Vec::new();
    let mut segments = Vec::new();
    let mut data_section = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::Version { encoding, .. } if encoding != Encoding::Module => return None,
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if matches!(import.ok()?.ty, wasmparser::TypeRef::Memory(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for ty in reader {
                    defined.push(Defined {
                        shape: Shape::parsed(&ty.ok()?),
                        start: 0,
                        data: Vec::new(),
                        segments: false,
                    });
                }
            }
            Payload::DataSection(reader) => {
                data_section = Some(reader.range());
                for data in reader {
                    segments.push(data.ok()?);
                }
            }
            _ => {}
        }
    }
    let gc_heap = defined.iter().any(|d| d.shape.takes_images()) && may_use_gc_heap(wasm);
    let mut baked = Baked {
        rewritten: None,
        defined,
        imported,
        refused: None,
        gc_heap,
    };
    let active: Vec<_> = segments
        .iter()
        .filter_map(|s| match &s.kind {
            DataKind::Active {
                memory_index,
                offset_expr,
            } => Some((*memory_index, offset_expr, s.data)),
            DataKind::Passive => None,
        })
        .collect();
    if active.is_empty() {
        return Some(baked);
    }
    for (memory, ..) in &active {
        if let Some(d) = memory
            .checked_sub(imported)
            .and_then(|i| baked.defined.get_mut(i as usize))
        {
            d.segments = true;
        }
    }
    let mut placed = Vec::with_capacity(active.len());
    let mut refusal = None;
    for (i, (memory, offset, bytes)) in active.iter().enumerate() {
        match place(&baked, *memory, offset, bytes.len()) {
            Ok(at) => placed.push((*memory - imported, at, *bytes)),
            Err(why) => {
                refusal = Some(format!("active data segment {i}: {why}"));
                break;
            }
        }
    }
    if refusal.is_none() && baked.gc_heap {
        refusal = Some(
            "the module may use Wasmtime's GC heap, whose memory request new_memory cannot tell from a linear memory's".into(),
        );
    }
    if refusal.is_none() {
        refusal = too_sparse(&baked, &placed);
    }
    if let Some(why) = refusal {
        baked.refused = Some(why);
        return Some(baked);
    }
    for (i, d) in baked.defined.iter_mut().enumerate() {
        let mine = placed
            .iter()
            .filter(|p| p.0 as usize == i && !p.2.is_empty());
        d.start = mine.map(|p| p.1 as usize).min().unwrap_or(0);
    }
    // In order: a later segment overwrites an earlier one, as at
    // instantiation.
    for (memory, at, bytes) in placed {
        let defined = &mut baked.defined[memory as usize];
        let (data, start) = (&mut defined.data, defined.start);
        let Some(at) = (at as usize).checked_sub(start) else {
            continue; // empty: writes nothing
        };
        let end = at + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[at..end].copy_from_slice(bytes);
    }
    for d in &mut baked.defined {
        let len = d.data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        d.data.truncate(len);
        d.data.shrink_to_fit();
    }
    baked.rewritten = Some(rewrite(
        wasm,
        data_section?,
        segments
            .iter()
            .map(|s| matches!(s.kind, DataKind::Passive).then_some(s.data)),
    )?);
    Some(baked)
}

/// Where an active segment of `len` bytes lands in its memory, if it can be
/// baked.
fn place(
    baked: &Baked,
    memory: u32,
    offset: &wasmparser::ConstExpr<'_>,
    len: usize,
) -> Result<u64, String> {
    let Some(d) = memory
        .checked_sub(baked.imported)
        .and_then(|i| baked.defined.get(i as usize))
    else {
        return Err(format!("memory {memory} is imported (or does not exist)"));
    };
    if !d.shape.takes_images() {
        return Err(format!(
            "memory {memory} is shared or has a page size other than 64 KiB"
        ));
    }
    let mut ops = offset.get_operators_reader();
    let at = match (ops.read(), d.shape.memory64) {
        (Ok(Operator::I32Const { value }), false) => u64::from(value as u32),
        (Ok(Operator::I64Const { value }), true) => value as u64,
        _ => return Err("its offset is not a constant of the memory's index type".into()),
    };
    if !matches!(ops.read(), Ok(Operator::End)) || !ops.eof() {
        return Err("its offset is not a single constant".into());
    }
    let end = at.checked_add(len as u64);
    match (end, d.shape.min_bytes()) {
        (Some(end), Some(min)) if end <= min => Ok(at),
        _ => Err(format!(
            "{len} bytes at {at} are out of bounds of memory {memory}'s minimum (instantiation traps)"
        )),
    }
}

/// Why the images would hold much more than the module's data, if so.
fn too_sparse(baked: &Baked, placed: &[(u32, u64, &[u8])]) -> Option<String> {
    for (i, _) in baked.defined.iter().enumerate() {
        let mine = placed.iter().filter(|p| p.0 as usize == i);
        let Some(span) = mine.clone().map(|p| p.1 + p.2.len() as u64).max() else {
            continue;
        };
        let data: u64 = mine.map(|p| p.2.len() as u64).sum();
        if span > DENSE_ENOUGH && span > data.saturating_mul(2) {
            return Some(format!(
                "memory {}: {data} bytes of data spread over {span} bytes",
                baked.imported as usize + i
            ));
        }
    }
    None
}

/// `wasm` with its data section replaced by passive segments: a passive
/// segment's own bytes, or none for an active one (`segments` in order).
fn rewrite<'a>(
    wasm: &[u8],
    data_section: std::ops::Range<usize>,
    segments: impl Iterator<Item = Option<&'a [u8]>>,
) -> Option<Vec<u8>> {
    let mut data = DataSection::new();
    for bytes in segments {
        data.passive(bytes.unwrap_or_default().iter().copied());
    }
    let mut module = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.ok()?;
        match payload.as_section() {
            Some((_, range)) if range == data_section => {
                module.section(&data);
            }
            Some((id, range)) => {
                module.section(&RawSection {
                    id,
                    data: wasm.get(range)?,
                });
            }
            None => {}
        }
    }
    Some(module.finish())
}

/// Whether instances of `wasm` may make Wasmtime ask for a GC heap:
/// conservatively, whether it needs any feature that a Wasmtime without a
/// garbage collector turns off (reference types other than functions',
/// GC, exceptions, and their relatives). Such a request comes before the
/// instance's memories and has the shape of a 32-bit memory without a
/// maximum, so it could take a baked memory's place.
fn may_use_gc_heap(wasm: &[u8]) -> bool {
    let gc = WasmFeatures::GC_TYPES
        | WasmFeatures::GC
        | WasmFeatures::EXCEPTIONS
        | WasmFeatures::LEGACY_EXCEPTIONS
        | WasmFeatures::STACK_SWITCHING
        | WasmFeatures::SHARED_EVERYTHING_THREADS
        | WasmFeatures::CUSTOM_DESCRIPTORS;
    Validator::new_with_features(WasmFeatures::all().difference(gc))
        .validate_all(wasm)
        .is_err()
}
