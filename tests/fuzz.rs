//! Random configurations (valid and not) and random operation sequences:
//! nothing may panic, every error must be the typed variant the situation
//! calls for, and a pool must end with nothing in use.

mod common;
use common::pick;

use instance_pool::*;
use proptest::prelude::*;
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const TIB: usize = 1 << 40;

#[derive(Clone, Debug)]
struct Cfg {
    total_instances: u32,
    total_memories: u32,
    total_tables: u32,
    max_memories_per_instance: u32,
    max_tables_per_instance: u32,
    max_memory_size: usize,
    memory_guard_size: usize,
    guard_before_memory: bool,
    table_elements: u32,
    memory_keep_resident: usize,
    table_keep_resident: usize,
    max_unused_warm_slots: u32,
    decommit_batch_size: usize,
}

impl Cfg {
    fn build(&self) -> PoolingConfig {
        let mut c = PoolingConfig::default();
        c.total_instances(self.total_instances)
            .total_memories(self.total_memories)
            .total_tables(self.total_tables)
            .max_memories_per_instance(self.max_memories_per_instance)
            .max_tables_per_instance(self.max_tables_per_instance)
            .max_memory_size(self.max_memory_size)
            .memory_guard_size(self.memory_guard_size)
            .guard_before_memory(self.guard_before_memory)
            .table_elements(self.table_elements)
            .memory_keep_resident(self.memory_keep_resident)
            .table_keep_resident(self.table_keep_resident)
            .max_unused_warm_slots(self.max_unused_warm_slots)
            .decommit_batch_size(self.decommit_batch_size);
        c
    }

    /// Whether a field breaks a rule that needs no OS to check.
    fn breaks_a_rule(&self) -> bool {
        let page = host_page_size();
        self.total_instances == 0
            || [
                self.max_memory_size,
                self.memory_guard_size,
                self.memory_keep_resident,
                self.table_keep_resident,
            ]
            .iter()
            .any(|v| v % page != 0)
            || self.max_memory_size > 4 * GIB
            || self.max_memories_per_instance > self.total_memories
            || self.max_tables_per_instance > self.total_tables
            || self.decommit_batch_size == 0
    }

    /// Whether the reservations are small enough that any machine should
    /// grant them (address space only; nothing is touched).
    fn modest(&self) -> bool {
        let stride = self.max_memory_size as u128 + self.memory_guard_size as u128;
        let memories = stride * (self.total_memories as u128 + 1);
        let tables = (self.table_elements as u128 * 8 + 4096) * self.total_tables as u128;
        memories < TIB as u128 && tables < 64 * GIB as u128 && self.total_memories < 1000
    }
}

/// One field set to a value that is invalid, or valid but extreme.
#[derive(Clone, Copy, Debug)]
enum Twist {
    NoInstances,
    MaxMemorySize(usize),
    GuardSize(usize),
    KeepResident(usize),
    TableKeepResident(usize),
    MoreMemoriesPerInstance,
    MoreTablesPerInstance,
    NoBatch,
    TotalMemories(u32),
    TableElements(u32),
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        Just(Twist::NoInstances),
        prop::sample::select(vec![MIB + 1, 4 * GIB + PAGE, usize::MAX, 4 * KIB + 1])
            .prop_map(Twist::MaxMemorySize),
        prop::sample::select(vec![100, 64 * TIB, usize::MAX & !(64 * KIB - 1)])
            .prop_map(Twist::GuardSize),
        // More than a 1 MiB slot (clamped); not 4 GiB, which a release of a
        // fully grown slot would then memset.
        prop::sample::select(vec![100, 2 * MIB]).prop_map(Twist::KeepResident),
        prop::sample::select(vec![100, 4097]).prop_map(Twist::TableKeepResident),
        Just(Twist::MoreMemoriesPerInstance),
        Just(Twist::MoreTablesPerInstance),
        Just(Twist::NoBatch),
        prop::sample::select(vec![100_000u32, u32::MAX]).prop_map(Twist::TotalMemories),
        Just(Twist::TableElements(u32::MAX)),
    ]
}

impl Cfg {
    fn twisted(mut self, t: Twist) -> Cfg {
        match t {
            Twist::NoInstances => self.total_instances = 0,
            Twist::MaxMemorySize(v) => self.max_memory_size = v,
            Twist::GuardSize(v) => self.memory_guard_size = v,
            Twist::KeepResident(v) => self.memory_keep_resident = v,
            Twist::TableKeepResident(v) => self.table_keep_resident = v,
            Twist::MoreMemoriesPerInstance => {
                self.max_memories_per_instance = self.total_memories + 1
            }
            Twist::MoreTablesPerInstance => self.max_tables_per_instance = self.total_tables + 1,
            Twist::NoBatch => self.decommit_batch_size = 0,
            Twist::TotalMemories(v) => self.total_memories = v,
            Twist::TableElements(v) => self.table_elements = v,
        }
        self
    }
}

/// A valid configuration, twisted (often into an invalid one) a third of
/// the time.
fn cfg() -> impl Strategy<Value = Cfg> {
    let bytes = |v: Vec<usize>| prop::sample::select(v);
    (
        (1..6u32, 0..6u32, 0..6u32, 1..4u32, 1..4u32),
        (
            bytes(vec![
                0,
                4 * KIB,
                PAGE,
                PAGE + 4 * KIB,
                MIB,
                MIB,
                4 * GIB,
                4 * GIB,
            ]),
            bytes(vec![0, 4 * KIB, PAGE, 32 * MIB]),
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![0u32, 1, 10, 1024, 100_000]),
            bytes(vec![0, 4 * KIB, PAGE, MIB]),
            bytes(vec![0, 4 * KIB, MIB]),
            prop::sample::select(vec![0u32, 1, 100]),
            bytes(vec![1, 2, 7]),
        ),
        prop::option::weighted(0.35, twist()),
    )
        .prop_map(
            |(
                (total_instances, total_memories, total_tables, mpi, tpi),
                (max_memory_size, memory_guard_size, guard_before_memory),
                (
                    table_elements,
                    memory_keep_resident,
                    table_keep_resident,
                    max_unused_warm_slots,
                    decommit_batch_size,
                ),
                twist,
            )| {
                let cfg = Cfg {
                    total_instances,
                    total_memories,
                    total_tables,
                    max_memories_per_instance: mpi.min(total_memories),
                    max_tables_per_instance: tpi.min(total_tables),
                    max_memory_size,
                    memory_guard_size,
                    guard_before_memory,
                    table_elements,
                    memory_keep_resident,
                    table_keep_resident,
                    max_unused_warm_slots,
                    decommit_batch_size,
                };
                match twist {
                    Some(t) => cfg.twisted(t),
                    None => cfg,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct MemGen {
    min: u64,
    max: Option<u64>,
    image: Option<usize>,
}

#[derive(Clone, Debug)]
struct LayoutGen {
    mems: Vec<MemGen>,
    tables: Vec<(u32, Option<u32>)>,
}

fn layout_gen() -> impl Strategy<Value = LayoutGen> {
    #[derive(Clone, Debug)]
    enum Max {
        None,
        AboveMin(u64),
        Raw(u64),
    }
    let max = prop_oneof![
        3 => Just(Max::None),
        4 => (0..40u64).prop_map(Max::AboveMin),
        1 => (0..40u64).prop_map(Max::Raw),
        1 => Just(Max::Raw(65_536)),
        1 => Just(Max::Raw(65_537)),
    ];
    let mem = (
        prop_oneof![6 => 0..4u64, 1 => 0..40u64, 1 => Just(u64::MAX)],
        max,
        prop_oneof![2 => Just(None), 1 => (0..IMAGES).prop_map(Some)],
    )
        .prop_map(|(min, max, image)| MemGen {
            min,
            max: match max {
                Max::None => None,
                Max::AboveMin(d) => Some(min.saturating_add(d)),
                Max::Raw(m) => Some(m),
            },
            image,
        });
    let table = (
        prop_oneof![8 => 0..50u32, 1 => 0..3000u32, 1 => Just(u32::MAX)],
        prop_oneof![2 => Just(None), 2 => (0..3000u32).prop_map(Some)],
    );
    (
        prop::collection::vec(mem, 0..3),
        prop::collection::vec(table, 0..3),
    )
        .prop_map(|(mems, tables)| LayoutGen { mems, tables })
}

const IMAGES: usize = 4;

fn images() -> Vec<(Arc<MemoryImage>, Vec<u8>)> {
    [
        vec![0x11; 1],
        (0..5000u32).map(|i| i as u8 | 1).collect(),
        vec![0x22; PAGE],
        vec![0x33; PAGE + 1],
    ]
    .into_iter()
    .map(|b| (MemoryImage::new(&b).unwrap(), b))
    .collect()
}

#[derive(Clone, Debug)]
enum Op {
    NewStore {
        limits: Option<(usize, u32, usize, usize, usize)>,
    },
    Instantiate {
        store: usize,
        layout: usize,
    },
    GrowMemory {
        store: usize,
        mem: usize,
        delta: u64,
    },
    GrowTable {
        store: usize,
        table: usize,
        delta: u32,
    },
    Write {
        store: usize,
        mem: usize,
        offset: usize,
    },
    SetTable {
        store: usize,
        table: usize,
        index: u32,
    },
    DropStore {
        store: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0..8usize;
    prop_oneof![
        2 => prop::option::weighted(
            0.7,
            (0..5 * MIB, 0..3000u32, 0..4usize, 0..6usize, 0..6usize)
        )
        .prop_map(|limits| Op::NewStore { limits }),
        5 => (i(), i()).prop_map(|(store, layout)| Op::Instantiate { store, layout }),
        3 => (
            i(),
            i(),
            prop_oneof![6 => 0..20u64, 1 => 0..70_000u64, 1 => any::<u64>()]
        )
            .prop_map(|(store, mem, delta)| Op::GrowMemory { store, mem, delta }),
        2 => (i(), i(), prop_oneof![6 => 0..100u32, 1 => any::<u32>()])
            .prop_map(|(store, table, delta)| Op::GrowTable { store, table, delta }),
        2 => (i(), i(), any::<usize>())
            .prop_map(|(store, mem, offset)| Op::Write { store, mem, offset }),
        2 => (i(), i(), any::<u32>())
            .prop_map(|(store, table, index)| Op::SetTable { store, table, index }),
        2 => i().prop_map(|store| Op::DropStore { store }),
    ]
}

fn to_layout(g: &LayoutGen, images: &[(Arc<MemoryImage>, Vec<u8>)]) -> InstanceLayout {
    let mut l = InstanceLayout::new();
    for m in &g.mems {
        let ty = MemoryType::new(m.min, m.max);
        l = match m.image {
            Some(i) => l.memory_with_image(ty, images[i].0.clone()),
            None => l.memory(ty),
        };
    }
    for &(min, max) in &g.tables {
        l = l.table(TableType::new(min, max));
    }
    l
}

struct Tenant {
    store: Store<StoreLimits>,
    instances: usize,
    memories: Vec<Memory>,
    tables: Vec<Table>,
}

/// Runs `ops` on `allocator` checking only what must always hold.
///
/// The on-demand allocator has no slots to bound a table or a memory, so
/// there (`pool` is `None`) every store gets a limiter with limits, and
/// the limiter keeps a table of `u32::MAX` elements from being built.
fn exercise(
    allocator: &impl InstanceAllocator,
    pool: Option<&PoolingInstanceAllocator>,
    layouts: &[LayoutGen],
    ops: &[Op],
) {
    let images = images();
    let built: Vec<_> = layouts.iter().map(|g| to_layout(g, &images)).collect();
    let mut tenants: Vec<Tenant> = Vec::new();
    for op in ops {
        match *op {
            Op::NewStore { limits } => {
                let limits = match limits.or(pool.is_none().then_some((MIB, 3000, 9, 9, 9))) {
                    Some((memory, table, instances, memories, tables)) => StoreLimitsBuilder::new()
                        .memory_size(memory)
                        .table_elements(table)
                        .instances(instances)
                        .memories(memories)
                        .tables(tables)
                        .build(),
                    None => StoreLimits::default(),
                };
                let mut store = Store::new(allocator, limits);
                store.limiter(|l| l);
                tenants.push(Tenant {
                    store,
                    instances: 0,
                    memories: Vec::new(),
                    tables: Vec::new(),
                });
            }
            Op::Instantiate { store, layout } => {
                let (Some(s), Some(l)) = (pick(store, tenants.len()), pick(layout, built.len()))
                else {
                    continue;
                };
                let t = &mut tenants[s];
                match t.store.instantiate(&built[l]) {
                    Ok(inst) => {
                        t.instances += 1;
                        for (i, g) in layouts[l].mems.iter().enumerate() {
                            let m = inst.memory(&t.store, i).unwrap();
                            assert_eq!(m.size(&t.store), g.min);
                            assert!(m.data_size(&t.store) <= m.reserved_size(&t.store));
                            let data = m.data(&t.store);
                            let image = g.image.map_or(&[][..], |i| images[i].1.as_slice());
                            assert_eq!(&data[..image.len()], image);
                            assert!(data[image.len()..].iter().all(|&b| b == 0));
                            t.memories.push(m);
                        }
                        for (i, &(min, _)) in layouts[l].tables.iter().enumerate() {
                            let tb = inst.table(&t.store, i).unwrap();
                            assert_eq!(tb.size(&t.store), min);
                            let seen = min.min(4096);
                            assert!((0..seen).all(|j| tb.get(&t.store, j) == Some(0)));
                            t.tables.push(tb);
                        }
                    }
                    Err(
                        Error::Unsupported(_)
                        | Error::StoreLimit { .. }
                        | Error::PoolExhausted { .. }
                        | Error::LimiterDenied { .. },
                    ) => {}
                    Err(e) => panic!("instantiate failed with {e:?}"),
                }
            }
            Op::GrowMemory { store, mem, delta } => {
                let Some(s) = pick(store, tenants.len()) else {
                    continue;
                };
                let t = &mut tenants[s];
                let Some(i) = pick(mem, t.memories.len()) else {
                    continue;
                };
                let m = t.memories[i];
                let before = m.size(&t.store);
                match m.grow(&mut t.store, delta) {
                    Ok(old) => {
                        assert_eq!(old, before);
                        assert_eq!(m.size(&t.store), before + delta);
                        assert!(m.data_size(&t.store) <= m.reserved_size(&t.store));
                    }
                    Err(Error::LimiterDenied { .. } | Error::MaximumExceeded { .. }) => {
                        assert_eq!(m.size(&t.store), before);
                    }
                    Err(e) => panic!("memory grow failed with {e:?}"),
                }
            }
            Op::GrowTable {
                store,
                table,
                delta,
            } => {
                let Some(s) = pick(store, tenants.len()) else {
                    continue;
                };
                let t = &mut tenants[s];
                let Some(i) = pick(table, t.tables.len()) else {
                    continue;
                };
                let tb = t.tables[i];
                let before = tb.size(&t.store);
                // Filling a huge grow would write gigabytes: init 0 then.
                let init = if delta <= 4096 { 5 } else { 0 };
                match tb.grow(&mut t.store, delta, init) {
                    Ok(old) => {
                        assert_eq!(old, before);
                        assert_eq!(tb.size(&t.store), before + delta);
                    }
                    Err(Error::LimiterDenied { .. } | Error::MaximumExceeded { .. }) => {
                        assert_eq!(tb.size(&t.store), before);
                    }
                    Err(e) => panic!("table grow failed with {e:?}"),
                }
            }
            Op::Write { store, mem, offset } => {
                let Some(s) = pick(store, tenants.len()) else {
                    continue;
                };
                let t = &mut tenants[s];
                let Some(i) = pick(mem, t.memories.len()) else {
                    continue;
                };
                let data = t.memories[i].data_mut(&mut t.store);
                if let Some(at) = pick(offset, data.len()) {
                    let end = data.len().min(at + 4096);
                    data[at..end].fill(0xF0);
                }
            }
            Op::SetTable {
                store,
                table,
                index,
            } => {
                let Some(s) = pick(store, tenants.len()) else {
                    continue;
                };
                let t = &mut tenants[s];
                let Some(i) = pick(table, t.tables.len()) else {
                    continue;
                };
                let tb = t.tables[i];
                let size = tb.size(&t.store);
                match tb.set(&mut t.store, index, 9) {
                    Ok(()) => assert!(index < size),
                    Err(Error::OutOfBounds {
                        index: got,
                        size: s,
                    }) => {
                        assert!(index >= size);
                        assert_eq!((got, s), (index, size));
                    }
                    Err(e) => panic!("table set failed with {e:?}"),
                }
                assert_eq!(tb.get(&t.store, index).is_some(), index < size);
            }
            Op::DropStore { store } => {
                if let Some(s) = pick(store, tenants.len()) {
                    tenants.remove(s);
                }
            }
        }
        if let Some(pool) = pool {
            let m = pool.metrics();
            let count = |f: fn(&Tenant) -> usize| tenants.iter().map(f).sum::<usize>();
            assert_eq!(m.instances_in_use as usize, count(|t| t.instances));
            assert_eq!(m.memories_in_use as usize, count(|t| t.memories.len()));
            assert_eq!(m.tables_in_use as usize, count(|t| t.tables.len()));
        }
    }
    drop(tenants);
    if let Some(pool) = pool {
        let m = pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (0, 0, 0),
            "{m:?}"
        );
    }
}

fn run(cfg: &Cfg, on_demand: bool, layouts: &[LayoutGen], ops: &[Op]) {
    if on_demand {
        exercise(&OnDemandInstanceAllocator::default(), None, layouts, ops);
        return;
    }
    match PoolingInstanceAllocator::new(&cfg.build()) {
        Ok(pool) => {
            assert!(!cfg.breaks_a_rule(), "accepted an invalid config: {cfg:?}");
            exercise(&pool, Some(&pool), layouts, ops);
        }
        Err(Error::InvalidConfig(msg)) => {
            assert!(!msg.is_empty());
            assert!(
                cfg.breaks_a_rule() || !cfg.modest(),
                "refused a valid, modest config: {msg}"
            );
        }
        Err(e) => panic!("PoolingInstanceAllocator::new failed with {e:?}, not InvalidConfig"),
    }
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn random_configs_and_operations_never_panic(
        cfg in cfg(),
        on_demand in prop::bool::weighted(0.15),
        layouts in prop::collection::vec(layout_gen(), 1..6),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        run(&cfg, on_demand, &layouts, &ops);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(20_000))]

    #[test]
    #[ignore = "long: 20,000 cases; run with --ignored"]
    fn random_configs_and_operations_never_panic_long(
        cfg in cfg(),
        on_demand in prop::bool::weighted(0.15),
        layouts in prop::collection::vec(layout_gen(), 1..8),
        ops in prop::collection::vec(op(), 0..150),
    ) {
        run(&cfg, on_demand, &layouts, &ops);
    }
}
