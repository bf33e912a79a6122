//! `ResourceLimiterAsync` through `instantiate_async` and `grow_async`, on a
//! tiny executor (no runtime dependency), with futures that really wait.

mod common;
use common::{block_on, config, in_use};

use instance_pool::*;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Pending once (waking itself from another thread), then ready.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        std::thread::spawn(move || waker.wake());
        Poll::Pending
    }
}

/// A quota service: answers after a wait, refuses past `budget` bytes.
#[derive(Default)]
struct Quota {
    budget: usize,
    calls: Vec<(usize, usize, Option<usize>)>,
    table_calls: Vec<(u32, u32, Option<u32>)>,
    failed: usize,
}

impl ResourceLimiterAsync for Quota {
    fn memory_growing<'a>(
        &'a mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> LimiterFuture<'a> {
        Box::pin(async move {
            YieldOnce(false).await;
            self.calls.push((current, desired, maximum));
            desired <= self.budget
        })
    }
    fn table_growing<'a>(
        &'a mut self,
        current: u32,
        desired: u32,
        maximum: Option<u32>,
    ) -> LimiterFuture<'a> {
        Box::pin(async move {
            YieldOnce(false).await;
            self.table_calls.push((current, desired, maximum));
            true
        })
    }
    fn memory_grow_failed(&mut self, _error: &Error) {
        self.failed += 1;
    }
}

/// Two slots; tables of the default 20,000 elements.
fn pool() -> PoolingInstanceAllocator {
    config::pool(&config::small(2))
}

fn layout() -> InstanceLayout {
    InstanceLayout::new()
        .memory(MemoryType::new(1, Some(8)))
        .table(TableType::new(2, None))
}

#[test]
fn async_limiter_is_awaited_at_instantiation_and_growth() {
    let p = pool();
    let mut s = Store::new(
        &p,
        Quota {
            budget: 3 * WASM_PAGE_SIZE,
            ..Quota::default()
        },
    );
    s.limiter_async(|q| q);
    let (i, old, denied) = block_on(async {
        let i = s.instantiate_async(&layout()).await.unwrap();
        let m = i.memory(&s, 0).unwrap();
        let old = m.grow_async(&mut s, 2).await.unwrap();
        let denied = m.grow_async(&mut s, 1).await.unwrap_err();
        (i, old, denied)
    });
    assert_eq!(old, 1);
    assert!(
        matches!(denied, Error::LimiterDenied { resource: Resource::Memory, desired } if desired == 4 * WASM_PAGE_SIZE)
    );
    let pg = WASM_PAGE_SIZE;
    assert_eq!(
        s.data().calls,
        [
            (0, pg, Some(8 * pg)),
            (pg, 3 * pg, Some(8 * pg)),
            (3 * pg, 4 * pg, Some(8 * pg))
        ]
    );
    assert_eq!(s.data().table_calls, [(0, 2, Some(20_000))]);
    assert_eq!(s.data().failed, 0);
    let t = i.table(&s, 0).unwrap();
    assert_eq!(block_on(t.grow_async(&mut s, 3, 1)).unwrap(), 2);
    assert_eq!(s.data().table_calls[1], (2, 5, Some(20_000)));
}

#[test]
fn sync_calls_block_on_an_async_limiter() {
    let p = pool();
    let mut s = Store::new(
        &p,
        Quota {
            budget: 2 * WASM_PAGE_SIZE,
            ..Quota::default()
        },
    );
    s.limiter_async(|q| q);
    let m = s.instantiate(&layout()).unwrap().memory(&s, 0).unwrap();
    assert_eq!(m.grow(&mut s, 1).unwrap(), 1);
    assert!(matches!(
        m.grow(&mut s, 1),
        Err(Error::LimiterDenied { .. })
    ));
    assert_eq!(s.data().calls.len(), 3);
}

#[test]
fn async_calls_use_a_sync_limiter_when_no_async_one_is_installed() {
    let p = pool();
    let mut s = Store::new(
        &p,
        StoreLimitsBuilder::new()
            .memory_size(2 * WASM_PAGE_SIZE)
            .build(),
    );
    s.limiter(|l| l);
    let m = block_on(s.instantiate_async(&layout()))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    assert_eq!(block_on(m.grow_async(&mut s, 1)).unwrap(), 1);
    assert!(matches!(
        block_on(m.grow_async(&mut s, 1)),
        Err(Error::LimiterDenied { .. })
    ));
}

#[test]
fn async_grow_past_maximum_calls_failure_hook_once() {
    let p = pool();
    let mut s = Store::new(
        &p,
        Quota {
            budget: usize::MAX,
            ..Quota::default()
        },
    );
    s.limiter_async(|q| q);
    let m = block_on(s.instantiate_async(&layout()))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    let err = block_on(m.grow_async(&mut s, 8)).unwrap_err();
    assert!(matches!(err, Error::MaximumExceeded { .. }));
    assert_eq!(s.data().failed, 1);
}

#[test]
fn async_refusal_at_instantiation_releases_everything() {
    let p = pool();
    let mut s = Store::new(
        &p,
        Quota {
            budget: 0,
            ..Quota::default()
        },
    );
    s.limiter_async(|q| q);
    let err = block_on(s.instantiate_async(&layout())).unwrap_err();
    assert!(matches!(err, Error::LimiterDenied { .. }));
    assert_eq!(in_use(&p), (0, 0, 0));
}

#[test]
fn async_futures_are_send() {
    fn send<F: Future + Send>(_: F) {}
    let p = pool();
    let mut s = Store::new(&p, Quota::default());
    s.limiter_async(|q| q);
    send(s.instantiate_async(&layout()));
}
