//! The world: the real pool and stores beside their model, and the checks
//! that they agree. Its steps are in `step.rs`.

use super::{Knobs, LAYOUTS, SLOT, SLOT_PAGES, TABLE_ELEMENTS, TOTAL, image_bytes, make_pool};
use crate::common::assert_nothing_in_use;
use crate::common::config::GUARD;
use crate::common::limiter::Recorder;
use instance_pool::*;
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;

/// A live memory as the model has it.
pub struct ModelMemory {
    pub bytes: Vec<u8>,
    pub maximum: usize,
    /// What instantiation made: what a reset returns to.
    pub initial: Vec<u8>,
}

/// A live table as the model has it.
pub struct ModelTable {
    pub elements: Vec<usize>,
    pub maximum: u32,
    pub minimum: u32,
}

/// A store as the model has it.
pub struct ModelStore {
    pub caps: (usize, usize, usize),
    pub instances: usize,
    pub memories: Vec<ModelMemory>,
    pub tables: Vec<ModelTable>,
}

/// The pool's counts as the model has them.
#[derive(Default, Debug, PartialEq)]
pub struct ModelCounts {
    pub instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub exhausted: [u64; 3],
    pub denials: u64,
}

/// A real store with the handles of its memories and tables, in the
/// model's order.
pub struct RealStore {
    pub store: Store<Recorder>,
    pub memories: Vec<Memory>,
    pub tables: Vec<Table>,
}

/// The pool with its stores, and the model of each.
pub struct World {
    pub(super) pool: PoolingInstanceAllocator,
    pub(super) images: Vec<Arc<MemoryImage>>,
    pub(super) image_bytes: Vec<Vec<u8>>,
    pub(super) layouts: Vec<InstanceLayout>,
    pub(super) model: Vec<ModelStore>,
    pub(super) real: Vec<RealStore>,
    pub(super) counts: ModelCounts,
}

impl World {
    pub fn new(knobs: &Knobs) -> World {
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

    /// Everything observable agrees with the model.
    pub fn check(&self) {
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
                assert_eq!(rm.guard_size(store), GUARD);
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
            assert!(w[1] - w[0] >= SLOT + GUARD, "slots overlap: {bases:x?}");
        }
    }

    /// Drops every store; the pool is then empty and serves its whole
    /// capacity clean.
    pub fn finish(mut self) {
        self.model.clear();
        self.real.clear();
        assert_nothing_in_use(&self.pool);
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
        assert_nothing_in_use(&self.pool);
    }
}
