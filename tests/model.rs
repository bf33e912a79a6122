//! A model of the pool, checked step by step against the real thing.
//!
//! Random sequences of operations over several stores sharing one small
//! pool (4 instances, 4 memories of 1 MiB, 4 tables): new stores (some with
//! small per-store caps), instantiations of a few layouts with and without
//! images, memory and table grows by random (sometimes absurd) amounts,
//! writes, table sets, and dropped stores, under a limiter that refuses at
//! random and records every call. After every step the pool must agree
//! with a plain model: the result or error variant with its fields, the
//! limiter's calls and arguments, the pool's in-use, exhaustion and denial
//! counts, and every live memory's and table's size and contents (so a slot
//! a tenant gets reads exactly its image and zeroes beyond, whatever the
//! previous tenant left).

mod common;

use instance_pool::*;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;
const SLOT_PAGES: u64 = 16;
const SLOT: usize = SLOT_PAGES as usize * PAGE;
const TOTAL: u32 = 4;
const TABLE_ELEMENTS: u32 = 1024;
const MEMORIES_PER_INSTANCE: usize = 2;
const TABLES_PER_INSTANCE: usize = 2;

// ---- layouts ----

struct MemSpec {
    min: u64,
    max: Option<u64>,
    image: Option<usize>,
}

struct TableSpec {
    min: u32,
    max: Option<u32>,
}

struct LayoutSpec {
    mems: &'static [MemSpec],
    tables: &'static [TableSpec],
}

const fn mem(min: u64, max: Option<u64>, image: Option<usize>) -> MemSpec {
    MemSpec { min, max, image }
}

const fn table(min: u32, max: Option<u32>) -> TableSpec {
    TableSpec { min, max }
}

const LAYOUTS: &[LayoutSpec] = &[
    LayoutSpec {
        mems: &[],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(1, Some(4), None)],
        tables: &[table(2, Some(10))],
    },
    LayoutSpec {
        mems: &[mem(2, None, Some(0))],
        tables: &[table(0, None)],
    },
    LayoutSpec {
        mems: &[mem(0, Some(16), None), mem(1, Some(20), Some(2))],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(3, Some(8), Some(0))],
        tables: &[table(1, Some(1)), table(5, None)],
    },
    LayoutSpec {
        mems: &[mem(1, None, Some(1))],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(4, Some(4), None)],
        tables: &[table(TABLE_ELEMENTS, None)],
    },
    LayoutSpec {
        mems: &[mem(SLOT_PAGES, None, Some(3))],
        tables: &[table(0, Some(2000))],
    },
    LayoutSpec {
        mems: &[mem(0, Some(0), None)],
        tables: &[table(0, Some(0))],
    },
    LayoutSpec {
        mems: &[mem(1, Some(3), Some(2)), mem(2, None, Some(0))],
        tables: &[table(3, None), table(0, Some(TABLE_ELEMENTS))],
    },
    // Unsupported by this pool: too many memories, a minimum past the
    // slot, a table minimum past the slot, too many tables.
    LayoutSpec {
        mems: &[mem(0, None, None), mem(0, None, None), mem(0, None, None)],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(SLOT_PAGES + 1, None, None)],
        tables: &[],
    },
    LayoutSpec {
        mems: &[],
        tables: &[table(TABLE_ELEMENTS + 1, None)],
    },
    LayoutSpec {
        mems: &[],
        tables: &[table(0, None), table(0, None), table(0, None)],
    },
];

fn image_bytes() -> Vec<Vec<u8>> {
    vec![
        (0..5000u32).map(|i| (i % 253) as u8 + 1).collect(),
        (0..PAGE as u32).map(|i| (i % 7) as u8 + 0x40).collect(),
        vec![0xC3; 100],
        Vec::new(),
    ]
}

fn unsupported(spec: &LayoutSpec) -> bool {
    spec.mems.len() > MEMORIES_PER_INSTANCE
        || spec.tables.len() > TABLES_PER_INSTANCE
        || spec.mems.iter().any(|m| m.min > SLOT_PAGES)
        || spec.tables.iter().any(|t| t.min > TABLE_ELEMENTS)
}

// ---- the limiter ----

/// A result or error, comparable.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Ok(u64),
    Unsupported,
    StoreLimit(Resource, usize),
    PoolExhausted(Resource, u32),
    LimiterDenied(Resource, usize),
    MaximumExceeded(Resource, usize, usize),
    OutOfBounds(u32, u32),
    Other(String),
}

fn outcome_of(e: &Error) -> Outcome {
    match e {
        Error::Unsupported(_) => Outcome::Unsupported,
        Error::StoreLimit { resource, limit } => Outcome::StoreLimit(*resource, *limit),
        Error::PoolExhausted { resource, limit } => Outcome::PoolExhausted(*resource, *limit),
        Error::LimiterDenied { resource, desired } => Outcome::LimiterDenied(*resource, *desired),
        Error::MaximumExceeded {
            resource,
            desired,
            maximum,
        } => Outcome::MaximumExceeded(*resource, *desired, *maximum),
        Error::OutOfBounds { index, size } => Outcome::OutOfBounds(*index, *size),
        other => Outcome::Other(format!("{other:?}")),
    }
}

fn outcome<T: Into<u64>>(r: Result<T>) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(v.into()),
        Err(e) => outcome_of(&e),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Call {
    MemoryGrowing(usize, usize, Option<usize>),
    TableGrowing(u32, u32, Option<u32>),
    MemoryGrowFailed(Outcome),
    TableGrowFailed(Outcome),
}

/// Answers from a script (true once it runs out) and records every call.
struct Limiter {
    caps: (usize, usize, usize),
    script: VecDeque<bool>,
    calls: Vec<Call>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        self.calls
            .push(Call::MemoryGrowing(current, desired, maximum));
        self.script.pop_front().unwrap_or(true)
    }
    fn table_growing(&mut self, current: u32, desired: u32, maximum: Option<u32>) -> bool {
        self.calls
            .push(Call::TableGrowing(current, desired, maximum));
        self.script.pop_front().unwrap_or(true)
    }
    fn memory_grow_failed(&mut self, e: &Error) {
        self.calls.push(Call::MemoryGrowFailed(outcome_of(e)));
    }
    fn table_grow_failed(&mut self, e: &Error) {
        self.calls.push(Call::TableGrowFailed(outcome_of(e)));
    }
    fn instances(&self) -> usize {
        self.caps.0
    }
    fn memories(&self) -> usize {
        self.caps.1
    }
    fn tables(&self) -> usize {
        self.caps.2
    }
}

// ---- operations ----

#[derive(Clone, Debug)]
enum Op {
    NewStore {
        caps: Option<(usize, usize, usize)>,
    },
    Instantiate {
        store: usize,
        layout: usize,
        /// The limiter refuses its n-th call (0-based) in this step.
        deny_at: Option<usize>,
    },
    GrowMemory {
        store: usize,
        mem: usize,
        delta: u64,
        deny: bool,
    },
    GrowTable {
        store: usize,
        table: usize,
        delta: u32,
        init: usize,
        deny: bool,
    },
    Write {
        store: usize,
        mem: usize,
        offset: usize,
        len: usize,
        byte: u8,
    },
    SetTable {
        store: usize,
        table: usize,
        index: u32,
        value: usize,
    },
    DropStore {
        store: usize,
    },
    /// `Store::reset`: every instance back to its just-instantiated state.
    Reset {
        store: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pick = 0..8usize;
    let caps = prop_oneof![
        3 => Just(None),
        1 => (0..3usize, 0..4usize, 0..4usize).prop_map(Some),
    ];
    let mem_delta = prop_oneof![
        8 => 0..=3u64,
        4 => 0..=18u64,
        1 => Just(u64::MAX),
        1 => Just(1u64 << 48),
        1 => Just(65_536u64),
    ];
    let table_delta = prop_oneof![
        6 => 0..=40u32,
        2 => 0..=1100u32,
        1 => Just(u32::MAX),
    ];
    let deny_at = prop_oneof![3 => Just(None), 1 => (0..4usize).prop_map(Some)];
    prop_oneof![
        2 => caps.prop_map(|caps| Op::NewStore { caps }),
        5 => (pick.clone(), 0..LAYOUTS.len(), deny_at).prop_map(|(store, layout, deny_at)| {
            Op::Instantiate { store, layout, deny_at }
        }),
        3 => (pick.clone(), pick.clone(), mem_delta, prop::bool::weighted(0.2)).prop_map(
            |(store, mem, delta, deny)| Op::GrowMemory { store, mem, delta, deny }
        ),
        2 => (
            pick.clone(),
            pick.clone(),
            table_delta,
            prop_oneof![Just(0usize), any::<usize>()],
            prop::bool::weighted(0.2)
        )
            .prop_map(|(store, table, delta, init, deny)| Op::GrowTable {
                store,
                table,
                delta,
                init,
                deny
            }),
        3 => (pick.clone(), pick.clone(), any::<usize>(), 1..200_000usize, any::<u8>()).prop_map(
            |(store, mem, offset, len, byte)| Op::Write { store, mem, offset, len, byte }
        ),
        2 => (pick.clone(), pick.clone(), any::<u32>(), any::<usize>()).prop_map(
            |(store, table, index, value)| Op::SetTable { store, table, index, value }
        ),
        2 => pick.clone().prop_map(|store| Op::DropStore { store }),
        1 => pick.prop_map(|store| Op::Reset { store }),
    ]
}

/// The pool's reset knobs, chosen per case.
#[derive(Clone, Debug)]
struct Knobs {
    keep_resident: usize,
    table_keep_resident: usize,
    batch: usize,
    max_unused_warm: u32,
    guard_before: bool,
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop::sample::select(vec![0, 4096, 64 << 10, 192 << 10, SLOT]),
        prop::sample::select(vec![0, 4096, 8192]),
        prop::sample::select(vec![1, 2, 5]),
        prop::sample::select(vec![0, 1, 100]),
        any::<bool>(),
    )
        .prop_map(
            |(keep_resident, table_keep_resident, batch, max_unused_warm, guard_before)| Knobs {
                keep_resident,
                table_keep_resident,
                batch,
                max_unused_warm,
                guard_before,
            },
        )
}

fn make_pool(k: &Knobs) -> PoolingInstanceAllocator {
    let mut c = PoolingConfig::default();
    c.total_instances(TOTAL)
        .total_memories(TOTAL)
        .total_tables(TOTAL)
        .max_memories_per_instance(MEMORIES_PER_INSTANCE as u32)
        .max_tables_per_instance(TABLES_PER_INSTANCE as u32)
        .max_memory_size(SLOT)
        .memory_guard_size(64 << 10)
        .guard_before_memory(k.guard_before)
        .table_elements(TABLE_ELEMENTS)
        .memory_keep_resident(k.keep_resident)
        .table_keep_resident(k.table_keep_resident)
        .max_unused_warm_slots(k.max_unused_warm)
        .decommit_batch_size(k.batch);
    PoolingInstanceAllocator::new(&c).unwrap()
}

// ---- the model ----

struct ModelMemory {
    bytes: Vec<u8>,
    maximum: usize,
    /// What instantiation made: what a reset returns to.
    initial: Vec<u8>,
}

struct ModelTable {
    elements: Vec<usize>,
    maximum: u32,
    minimum: u32,
}

struct ModelStore {
    caps: (usize, usize, usize),
    instances: usize,
    memories: Vec<ModelMemory>,
    tables: Vec<ModelTable>,
}

#[derive(Default, Debug, PartialEq)]
struct ModelCounts {
    instances: u32,
    memories: u32,
    tables: u32,
    exhausted: [u64; 3],
    denials: u64,
}

struct RealStore {
    store: Store<Limiter>,
    memories: Vec<Memory>,
    tables: Vec<Table>,
}

struct World {
    pool: PoolingInstanceAllocator,
    images: Vec<Arc<MemoryImage>>,
    image_bytes: Vec<Vec<u8>>,
    layouts: Vec<InstanceLayout>,
    model: Vec<ModelStore>,
    real: Vec<RealStore>,
    counts: ModelCounts,
}

fn resource_index(r: Resource) -> usize {
    match r {
        Resource::Instance => 0,
        Resource::Memory => 1,
        Resource::Table => 2,
    }
}

impl World {
    fn new(knobs: &Knobs) -> World {
        let image_bytes = image_bytes();
        let images: Vec<_> = image_bytes
            .iter()
            .map(|b| MemoryImage::new(b).unwrap())
            .collect();
        let layouts = LAYOUTS
            .iter()
            .map(|spec| {
                let mut l = InstanceLayout::new();
                for m in spec.mems {
                    let ty = MemoryType::new(m.min, m.max);
                    l = match m.image {
                        Some(i) => l.memory_with_image(ty, images[i].clone()),
                        None => l.memory(ty),
                    };
                }
                for t in spec.tables {
                    l = l.table(TableType::new(t.min, t.max));
                }
                l
            })
            .collect();
        World {
            pool: make_pool(knobs),
            images,
            image_bytes,
            layouts,
            model: Vec::new(),
            real: Vec::new(),
            counts: ModelCounts::default(),
        }
    }

    /// Applies `op` to both sides and checks they agree.
    fn step(&mut self, op: &Op) {
        match *op {
            Op::NewStore { caps } => {
                let caps = caps.unwrap_or((10_000, 10_000, 10_000));
                let mut store = Store::new(
                    &self.pool,
                    Limiter {
                        caps,
                        script: VecDeque::new(),
                        calls: Vec::new(),
                    },
                );
                store.limiter(|l| l);
                self.real.push(RealStore {
                    store,
                    memories: Vec::new(),
                    tables: Vec::new(),
                });
                self.model.push(ModelStore {
                    caps,
                    instances: 0,
                    memories: Vec::new(),
                    tables: Vec::new(),
                });
            }
            Op::Instantiate {
                store,
                layout,
                deny_at,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let mut script = VecDeque::new();
                if let Some(n) = deny_at {
                    script.extend(std::iter::repeat_n(true, n));
                    script.push_back(false);
                }
                let (expected, calls) = self.model_instantiate(s, layout, &script);
                let real = &mut self.real[s];
                real.store.data_mut().script = script;
                real.store.data_mut().calls.clear();
                let got = match real.store.instantiate(&self.layouts[layout]) {
                    Ok(inst) => {
                        let spec = &LAYOUTS[layout];
                        for i in 0..spec.mems.len() {
                            real.memories.push(inst.memory(&real.store, i).unwrap());
                        }
                        for i in 0..spec.tables.len() {
                            real.tables.push(inst.table(&real.store, i).unwrap());
                        }
                        assert!(inst.memory(&real.store, spec.mems.len()).is_none());
                        assert!(inst.table(&real.store, spec.tables.len()).is_none());
                        Outcome::Ok(0)
                    }
                    Err(e) => outcome_of(&e),
                };
                assert_eq!(got, expected, "instantiate layout {layout}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::GrowMemory {
                store,
                mem,
                delta,
                deny,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(mem, self.model[s].memories.len()) else {
                    return;
                };
                let m = &mut self.model[s].memories[i];
                let current = m.bytes.len();
                let pages = (current / PAGE) as u64;
                let mut calls = Vec::new();
                let expected = if delta == 0 {
                    Outcome::Ok(pages)
                } else {
                    let desired = pages
                        .checked_add(delta)
                        .and_then(|p| p.checked_mul(PAGE as u64))
                        .and_then(|b| usize::try_from(b).ok())
                        .unwrap_or(usize::MAX & !(PAGE - 1));
                    calls.push(Call::MemoryGrowing(current, desired, Some(m.maximum)));
                    if deny {
                        self.counts.denials += 1;
                        Outcome::LimiterDenied(Resource::Memory, desired)
                    } else if desired > m.maximum {
                        let o = Outcome::MaximumExceeded(Resource::Memory, desired, m.maximum);
                        calls.push(Call::MemoryGrowFailed(o.clone()));
                        o
                    } else {
                        m.bytes.resize(desired, 0);
                        Outcome::Ok(pages)
                    }
                };
                let real = &mut self.real[s];
                real.store.data_mut().script = VecDeque::from([!deny]);
                real.store.data_mut().calls.clear();
                let got = outcome(real.memories[i].grow(&mut real.store, delta));
                assert_eq!(got, expected, "grow memory {i} by {delta}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::GrowTable {
                store,
                table,
                delta,
                init,
                deny,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(table, self.model[s].tables.len()) else {
                    return;
                };
                let t = &mut self.model[s].tables[i];
                let current = t.elements.len() as u32;
                let mut calls = Vec::new();
                let expected = if delta == 0 {
                    Outcome::Ok(current.into())
                } else {
                    let desired = current.saturating_add(delta);
                    calls.push(Call::TableGrowing(current, desired, Some(t.maximum)));
                    if deny {
                        self.counts.denials += 1;
                        Outcome::LimiterDenied(Resource::Table, desired as usize)
                    } else if desired > t.maximum {
                        let o = Outcome::MaximumExceeded(
                            Resource::Table,
                            desired as usize,
                            t.maximum as usize,
                        );
                        calls.push(Call::TableGrowFailed(o.clone()));
                        o
                    } else {
                        t.elements.resize(desired as usize, init);
                        Outcome::Ok(current.into())
                    }
                };
                let real = &mut self.real[s];
                real.store.data_mut().script = VecDeque::from([!deny]);
                real.store.data_mut().calls.clear();
                let got = outcome(real.tables[i].grow(&mut real.store, delta, init));
                assert_eq!(got, expected, "grow table {i} by {delta}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::Write {
                store,
                mem,
                offset,
                len,
                byte,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(mem, self.model[s].memories.len()) else {
                    return;
                };
                let bytes = &mut self.model[s].memories[i].bytes;
                if bytes.is_empty() {
                    return;
                }
                let start = offset % bytes.len();
                let end = start + len.min(bytes.len() - start);
                bytes[start..end].fill(byte);
                let real = &mut self.real[s];
                real.memories[i].data_mut(&mut real.store)[start..end].fill(byte);
            }
            Op::SetTable {
                store,
                table,
                index,
                value,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(table, self.model[s].tables.len()) else {
                    return;
                };
                let elements = &mut self.model[s].tables[i].elements;
                let size = elements.len() as u32;
                // Mostly in bounds, sometimes just past, sometimes far past.
                let index = match index % 8 {
                    0 => size.saturating_add(index % 3),
                    1 => index,
                    _ if size > 0 => index % size,
                    _ => index % 2,
                };
                let expected = match elements.get_mut(index as usize) {
                    Some(e) => {
                        *e = value;
                        Outcome::Ok(0)
                    }
                    None => Outcome::OutOfBounds(index, size),
                };
                let real = &mut self.real[s];
                let got = outcome(
                    real.tables[i]
                        .set(&mut real.store, index, value)
                        .map(|()| 0u64),
                );
                assert_eq!(got, expected, "set table {i}[{index}]");
                let read = real.tables[i].get(&real.store, index);
                assert_eq!(read, elements.get(index as usize).copied());
            }
            Op::DropStore { store } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let m = self.model.remove(s);
                self.counts.instances -= m.instances as u32;
                self.counts.memories -= m.memories.len() as u32;
                self.counts.tables -= m.tables.len() as u32;
                drop(self.real.remove(s));
            }
            Op::Reset { store } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let model = &mut self.model[s];
                for m in &mut model.memories {
                    m.bytes.clone_from(&m.initial);
                }
                for t in &mut model.tables {
                    t.elements = vec![0; t.minimum as usize];
                }
                let real = &mut self.real[s];
                real.store.data_mut().calls.clear();
                real.store.reset().unwrap();
                assert_eq!(real.store.data().calls, [], "reset asked the limiter");
            }
        }
        self.check();
    }

    fn pick_store(&self, store: usize) -> Option<usize> {
        pick(store, self.model.len())
    }

    /// What instantiating `layout` in store `s` must do; updates the model.
    fn model_instantiate(
        &mut self,
        s: usize,
        layout: usize,
        script: &VecDeque<bool>,
    ) -> (Outcome, Vec<Call>) {
        let spec = &LAYOUTS[layout];
        let mut calls = Vec::new();
        if unsupported(spec) {
            return (Outcome::Unsupported, calls);
        }
        let store = &self.model[s];
        let (ci, cm, ct) = store.caps;
        if store.instances + 1 > ci {
            return (Outcome::StoreLimit(Resource::Instance, ci), calls);
        }
        if store.memories.len() + spec.mems.len() > cm {
            return (Outcome::StoreLimit(Resource::Memory, cm), calls);
        }
        if store.tables.len() + spec.tables.len() > ct {
            return (Outcome::StoreLimit(Resource::Table, ct), calls);
        }
        let c = &mut self.counts;
        let exhausted = if c.instances + 1 > TOTAL {
            Some(Resource::Instance)
        } else if c.memories + spec.mems.len() as u32 > TOTAL {
            Some(Resource::Memory)
        } else if c.tables + spec.tables.len() as u32 > TOTAL {
            Some(Resource::Table)
        } else {
            None
        };
        if let Some(r) = exhausted {
            c.exhausted[resource_index(r)] += 1;
            return (Outcome::PoolExhausted(r, TOTAL), calls);
        }
        let mut answers = script.iter().copied();
        let mut memories = Vec::new();
        for m in spec.mems {
            let min = m.min as usize * PAGE;
            let maximum = m.max.unwrap_or(65_536).min(SLOT_PAGES) as usize * PAGE;
            calls.push(Call::MemoryGrowing(0, min, Some(maximum)));
            if !answers.next().unwrap_or(true) {
                c.denials += 1;
                return (Outcome::LimiterDenied(Resource::Memory, min), calls);
            }
            let mut bytes = vec![0; min];
            if let Some(i) = m.image {
                let img = &self.image_bytes[i];
                bytes[..img.len()].copy_from_slice(img);
            }
            memories.push(ModelMemory {
                initial: bytes.clone(),
                bytes,
                maximum,
            });
        }
        let mut tables = Vec::new();
        for t in spec.tables {
            let maximum = t.max.unwrap_or(u32::MAX).min(TABLE_ELEMENTS);
            calls.push(Call::TableGrowing(0, t.min, Some(maximum)));
            if !answers.next().unwrap_or(true) {
                c.denials += 1;
                return (
                    Outcome::LimiterDenied(Resource::Table, t.min as usize),
                    calls,
                );
            }
            tables.push(ModelTable {
                elements: vec![0; t.min as usize],
                maximum,
                minimum: t.min,
            });
        }
        c.instances += 1;
        c.memories += memories.len() as u32;
        c.tables += tables.len() as u32;
        let store = &mut self.model[s];
        store.instances += 1;
        store.memories.extend(memories);
        store.tables.extend(tables);
        (Outcome::Ok(0), calls)
    }

    /// Everything observable agrees with the model.
    fn check(&self) {
        let m = self.pool.metrics();
        let got = ModelCounts {
            instances: m.instances_in_use,
            memories: m.memories_in_use,
            tables: m.tables_in_use,
            exhausted: [
                m.instances_exhausted,
                m.memories_exhausted,
                m.tables_exhausted,
            ],
            denials: m.limiter_denials,
        };
        assert_eq!(got, self.counts, "pool metrics");
        let mut bases = Vec::new();
        for (model, real) in self.model.iter().zip(&self.real) {
            assert_eq!(model.memories.len(), real.memories.len());
            assert_eq!(model.tables.len(), real.tables.len());
            for (i, (mm, rm)) in model.memories.iter().zip(&real.memories).enumerate() {
                let store = &real.store;
                assert_eq!(rm.data_size(store), mm.bytes.len(), "memory {i} size");
                assert_eq!(rm.size(store), (mm.bytes.len() / PAGE) as u64);
                assert_eq!(rm.reserved_size(store), SLOT);
                assert_eq!(rm.guard_size(store), 64 << 10);
                let data = rm.data(store);
                if data != mm.bytes.as_slice() {
                    let at = data
                        .iter()
                        .zip(&mm.bytes)
                        .position(|(a, b)| a != b)
                        .unwrap();
                    panic!(
                        "memory {i} differs at byte {at}: {:#x}, model {:#x}",
                        data[at], mm.bytes[at]
                    );
                }
                bases.push(rm.data_ptr(store) as usize);
            }
            for (i, (mt, rt)) in model.tables.iter().zip(&real.tables).enumerate() {
                let store = &real.store;
                assert_eq!(rt.size(store) as usize, mt.elements.len(), "table {i} size");
                for (j, e) in mt.elements.iter().enumerate() {
                    assert_eq!(rt.get(store, j as u32), Some(*e), "table {i}[{j}]");
                }
                assert_eq!(rt.get(store, mt.elements.len() as u32), None);
            }
        }
        // Live memories are in distinct slots, a slot and a guard apart.
        bases.sort_unstable();
        for w in bases.windows(2) {
            assert!(
                w[1] - w[0] >= SLOT + (64 << 10),
                "slots overlap: {bases:x?}"
            );
        }
    }

    /// Drops every store; the pool is then empty and serves its whole
    /// capacity clean.
    fn finish(mut self) {
        self.model.clear();
        self.real.clear();
        let m = self.pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (0, 0, 0)
        );
        let layout = InstanceLayout::new()
            .memory_with_image(MemoryType::new(SLOT_PAGES, None), self.images[0].clone())
            .table(TableType::new(TABLE_ELEMENTS, None));
        let stores: Vec<_> = (0..TOTAL)
            .map(|_| {
                let mut s = Store::new(&self.pool, ());
                let i = s.instantiate(&layout).unwrap();
                let data = i.memory(&s, 0).unwrap().data(&s);
                let img = &self.image_bytes[0];
                assert_eq!(&data[..img.len()], img.as_slice());
                assert!(data[img.len()..].iter().all(|&b| b == 0));
                let t = i.table(&s, 0).unwrap();
                assert!((0..TABLE_ELEMENTS).all(|j| t.get(&s, j) == Some(0)));
                s
            })
            .collect();
        drop(stores);
        let m = self.pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (0, 0, 0)
        );
    }
}

fn pick(i: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| i % len)
}

fn run(knobs: &Knobs, ops: &[Op]) {
    let mut world = World::new(knobs);
    world.check();
    for op in ops {
        world.step(op);
    }
    world.finish();
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn pool_agrees_with_model(
        knobs in knobs(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run(&knobs, &ops);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(2000))]

    #[test]
    #[ignore = "long: 2,000 cases; run with --ignored"]
    fn pool_agrees_with_model_long(
        knobs in knobs(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(&knobs, &ops);
    }
}

/// A fixed sequence covering the main paths, so the model is exercised
/// even if the strategies drift: fill the pool, exhaust it, deny, grow past
/// the slot, release and reuse.
#[test]
fn model_fixed_sequence() {
    let knobs = Knobs {
        keep_resident: 64 << 10,
        table_keep_resident: 4096,
        batch: 2,
        max_unused_warm: 1,
        guard_before: true,
    };
    let mut ops = Vec::new();
    for s in 0..5 {
        ops.push(Op::NewStore { caps: None });
        ops.push(Op::Instantiate {
            store: s,
            layout: 4,
            deny_at: None,
        });
        ops.push(Op::Write {
            store: s,
            mem: 0,
            offset: 10,
            len: 1 << 20,
            byte: 0xEE,
        });
        ops.push(Op::GrowMemory {
            store: s,
            mem: 0,
            delta: 5,
            deny: false,
        });
        ops.push(Op::GrowTable {
            store: s,
            table: 1,
            delta: 100,
            init: 7,
            deny: false,
        });
    }
    ops.push(Op::GrowMemory {
        store: 0,
        mem: 0,
        delta: 1,
        deny: true,
    });
    ops.push(Op::GrowMemory {
        store: 0,
        mem: 0,
        delta: u64::MAX,
        deny: false,
    });
    for s in [1, 0] {
        ops.push(Op::DropStore { store: s });
    }
    ops.push(Op::NewStore {
        caps: Some((1, 1, 1)),
    });
    for layout in [9, 1, 1] {
        ops.push(Op::Instantiate {
            store: 3,
            layout,
            deny_at: Some(1),
        });
    }
    run(&knobs, &ops);
}
