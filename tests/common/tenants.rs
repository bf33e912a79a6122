//! A pool of four slots (1 MiB memories, 1024-element tables) whose
//! tenants fill their whole slot and table with garbage, and the checks
//! that every later tenant still finds its slots clean: the harness of the
//! failure walks and of the interrupted-call tests.

use super::config::{self, MIB, Resets};
use super::limiter::{self, Recorder};
use super::{assert_nothing_in_use, in_use, pattern};
use instance_pool::*;
use std::sync::Arc;

pub const PAGE: usize = WASM_PAGE_SIZE;
pub const TOTAL: u32 = 4;
pub const TABLE_ELEMENTS: u32 = 1024;
/// Memories start at 2 pages, tables at 16 elements.
pub const MIN_PAGES: u64 = 2;
pub const MIN_ELEMENTS: u32 = 16;

const BASE_SETUPS: [Resets; 6] = [
    Resets {
        keep_resident: 0,
        table_keep_resident: 0,
        batch: 1,
        shape: config::SHAPES[0],
    },
    Resets {
        keep_resident: 64 << 10,
        table_keep_resident: 4096,
        batch: 1,
        shape: config::SHAPES[0],
    },
    Resets {
        keep_resident: MIB,
        table_keep_resident: 8192,
        batch: 1,
        shape: config::SHAPES[0],
    },
    Resets {
        keep_resident: 0,
        table_keep_resident: 4096,
        batch: 3,
        shape: config::SHAPES[0],
    },
    // Batches larger than the pool: every release is queued until an
    // acquisition finds the pool empty (or an explicit flush).
    Resets {
        keep_resident: 0,
        table_keep_resident: 0,
        batch: 8,
        shape: config::SHAPES[0],
    },
    Resets {
        keep_resident: 64 << 10,
        table_keep_resident: 0,
        batch: 8,
        shape: config::SHAPES[0],
    },
];

/// The reset settings every failure walk covers, on each protection.
pub fn setups() -> Vec<Resets> {
    config::ALL_SHAPES
        .iter()
        .flat_map(|&shape| BASE_SETUPS.map(|s| Resets { shape, ..s }))
        .collect()
}

pub fn pool(setup: Resets) -> PoolingInstanceAllocator {
    let mut c = config::small(TOTAL);
    c.table_elements(TABLE_ELEMENTS);
    setup.apply(&mut c);
    config::pool(&c)
}

pub struct Images {
    pub main: Arc<MemoryImage>,
    pub main_bytes: Vec<u8>,
    pub other: Arc<MemoryImage>,
}

/// Two images, recognisable and not page-aligned in length.
pub fn images() -> Images {
    let main_bytes = pattern(5000, 1);
    Images {
        main: MemoryImage::new(&main_bytes).unwrap(),
        main_bytes,
        other: MemoryImage::new(&pattern(5000, 2)).unwrap(),
    }
}

/// A memory of [`MIN_PAGES`] (at most 16), with `image`, and a table of
/// [`MIN_ELEMENTS`].
pub fn layout(image: Option<&Arc<MemoryImage>>) -> InstanceLayout {
    let ty = MemoryType::new(MIN_PAGES, Some(16));
    let l = match image {
        Some(i) => InstanceLayout::new().memory_with_image(ty, i.clone()),
        None => InstanceLayout::new().memory(ty),
    };
    l.table(TableType::new(MIN_ELEMENTS, Some(TABLE_ELEMENTS)))
}

/// A fresh instance: the memory reads `image` then zeroes up to its
/// minimum, the table reads zeroes.
pub fn assert_fresh(store: &Store<Recorder>, inst: Instance, image: Option<&[u8]>) {
    let m = inst.memory(store, 0).unwrap();
    assert_eq!(m.size(store), MIN_PAGES);
    let data = m.data(store);
    assert_eq!(data.len(), MIN_PAGES as usize * PAGE);
    let image = image.unwrap_or(&[]);
    assert!(
        data[..image.len()] == *image,
        "memory does not hold its image"
    );
    if let Some(at) = data[image.len()..].iter().position(|&b| b != 0) {
        panic!(
            "fresh memory has {:#x} at byte {}",
            data[image.len() + at],
            image.len() + at
        );
    }
    let t = inst.table(store, 0).unwrap();
    assert_eq!(t.size(store), MIN_ELEMENTS);
    for i in 0..MIN_ELEMENTS {
        assert_eq!(t.get(store, i), Some(0), "fresh table element {i}");
    }
}

/// What a tenant does: fills its whole slot and table with garbage.
pub fn dirty(store: &mut Store<Recorder>, inst: Instance) {
    let m = inst.memory(store, 0).unwrap();
    let pages = m.size(store);
    m.grow(store, 16 - pages).unwrap();
    m.data_mut(store).fill(0xA5);
    let t = inst.table(store, 0).unwrap();
    t.grow(store, TABLE_ELEMENTS - MIN_ELEMENTS, 0xDEAD)
        .unwrap();
    for i in 0..MIN_ELEMENTS {
        t.set(store, i, 0xBEEF).unwrap();
    }
}

/// The pool still serves its full capacity, twice over (so the slots the
/// first round dirties are checked clean by the second), each slot reading
/// zeroes or its image; one more is `PoolExhausted`.
pub fn assert_full_capacity(pool: &PoolingInstanceAllocator, images: &Images) {
    #[cfg(feature = "fault-injection")]
    assert!(!fault::pending());
    for _round in 0..2 {
        let mut stores = Vec::new();
        for i in 0..TOTAL {
            let mut store = limiter::store(pool);
            let with_image = i % 2 == 0;
            let l = layout(with_image.then_some(&images.main));
            let inst = store
                .instantiate(&l)
                .unwrap_or_else(|e| panic!("slot {i} of {TOTAL} not served: {e:?}"));
            assert_fresh(
                &store,
                inst,
                with_image.then_some(images.main_bytes.as_slice()),
            );
            dirty(&mut store, inst);
            stores.push(store);
        }
        assert_eq!(in_use(pool), (TOTAL, TOTAL, TOTAL));
        let mut extra = limiter::store(pool);
        assert!(matches!(
            extra.instantiate(&layout(None)),
            Err(Error::PoolExhausted {
                resource: Resource::Instance,
                limit: TOTAL
            })
        ));
        drop(stores);
        assert_nothing_in_use(pool);
    }
}

/// What the slots look like before the operation under test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Before {
    /// A fresh pool.
    Cold,
    /// One slot was used (and dirtied) with the same image (or no image,
    /// as the operation) and reset.
    WarmSame,
    /// ... with a different image.
    WarmOtherImage,
    /// ... with no image.
    WarmNoImage,
    /// Every slot was used and released, and the resets are still queued
    /// (batch > 1): the acquisition has to flush them first.
    AllQueued,
}

pub const BEFORES: [Before; 5] = [
    Before::Cold,
    Before::WarmSame,
    Before::WarmOtherImage,
    Before::WarmNoImage,
    Before::AllQueued,
];

/// Brings `pool` into the state `before` (for an operation with or
/// without the main image).
pub fn prepare(pool: &PoolingInstanceAllocator, images: &Images, before: Before, image: bool) {
    let use_once = |img: Option<&Arc<MemoryImage>>| {
        let mut store = limiter::store(pool);
        let inst = store.instantiate(&layout(img)).unwrap();
        dirty(&mut store, inst);
    };
    match before {
        Before::Cold => {}
        Before::WarmSame => use_once(image.then_some(&images.main)),
        Before::WarmOtherImage => use_once(Some(&images.other)),
        Before::WarmNoImage => use_once(None),
        Before::AllQueued => {
            let stores: Vec<_> = (0..TOTAL)
                .map(|i| {
                    let mut store = limiter::store(pool);
                    let img = [Some(&images.main), Some(&images.other), None][i as usize % 3];
                    let inst = store.instantiate(&layout(img)).unwrap();
                    dirty(&mut store, inst);
                    store
                })
                .collect();
            drop(stores);
        }
    }
    if before != Before::AllQueued {
        pool.flush_decommits();
    }
}
