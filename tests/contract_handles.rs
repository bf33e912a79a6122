//! The contract for handles and public types: instance handles index
//! memories and tables in order, belong to their store, keep the allocator
//! alive; the types have the promised traits and messages.

mod common;
use common::config;
use common::limiter::store;
use common::{in_use, one_memory, one_table};

use instance_pool::*;
use std::sync::Arc;

fn pool() -> PoolingInstanceAllocator {
    config::pool(&config::small_two_per_instance(100))
}

#[test]
fn table_set_and_get_past_size() {
    let p = pool();
    let mut s = store(&p);
    let t = s
        .instantiate(&one_table(2, None))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    t.set(&mut s, 1, 5).unwrap();
    assert_eq!(t.get(&s, 1), Some(5));
    assert_eq!(t.get(&s, 2), None);
    assert!(matches!(
        t.set(&mut s, 2, 1),
        Err(Error::OutOfBounds { index: 2, size: 2 })
    ));
}

#[test]
fn instance_handles_index_memories_and_tables_in_order() {
    let p = pool();
    let mut s = store(&p);
    let a = s.instantiate(&one_memory(1, None)).unwrap();
    let b = s
        .instantiate(&one_memory(2, None).table(TableType::new(3, None)))
        .unwrap();
    assert_eq!(a.memory(&s, 0).unwrap().size(&s), 1);
    assert_eq!(b.memory(&s, 0).unwrap().size(&s), 2);
    assert_eq!(b.memory(&s, 1), None);
    assert_eq!(a.table(&s, 0), None);
    assert_eq!(b.table(&s, 0).unwrap().size(&s), 3);
}

#[test]
#[should_panic(expected = "does not belong")]
fn handle_used_with_another_store_panics() {
    let p = pool();
    let mut a = store(&p);
    let b = store(&p);
    let m = a
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&a, 0)
        .unwrap();
    m.size(&b);
}

#[test]
fn store_keeps_its_allocator_alive() {
    let p = pool();
    let mut s = store(&p);
    drop(p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    m.data_mut(&mut s)[0] = 1;
    assert_eq!(m.data(&s)[0], 1);
}

#[test]
fn allocator_clones_share_one_pool() {
    let p = pool();
    let q = p.clone();
    let mut s = store(&q);
    s.instantiate(&one_memory(1, None)).unwrap();
    assert_eq!(in_use(&p), (1, 1, 0));
}

// ---- types ----

#[test]
fn public_types_have_the_promised_traits() {
    fn send_sync<T: Send + Sync>() {}
    fn handle<T: Copy + Send + Sync + 'static>() {}
    fn static_<T: 'static>() {}
    send_sync::<Store<StoreLimits>>();
    static_::<Store<StoreLimits>>();
    handle::<Instance>();
    handle::<Memory>();
    handle::<Table>();
    send_sync::<PoolingInstanceAllocator>();
    send_sync::<Error>();
    let _ = PoolingInstanceAllocator::clone;
    let _: OnDemandInstanceAllocator = Default::default();
    let _: StoreLimits = Default::default();
    let _ = <StoreLimits as Clone>::clone;
    let _ = InstanceLayout::clone;
    let _: Arc<MemoryImage> = MemoryImage::new(b"").unwrap();
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Unsupported("x".into()));
    assert_eq!(e.to_string(), "unsupported: x");
}

#[test]
fn exhaustion_message_names_limit_and_kind() {
    let e = Error::PoolExhausted {
        resource: Resource::Memory,
        limit: 7,
    };
    assert_eq!(
        e.to_string(),
        "maximum concurrent limit of 7 for memorys reached".replace("memorys", "memories")
    );
}
