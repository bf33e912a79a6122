//! `PooledModule`'s slots taken before Wasmtime runs: instantiations that
//! wait for them (woken when a Wasmtime store drops, `PoolExhausted` at the
//! deadline), async instantiations interleaved on one thread, refusals that
//! leave every count as it was, and an instantiation at thread exit.

mod common;

use common::config::{ALL_SHAPES, SHAPES};
use common::jit::{PROBE, baked, engine_on, memory_bytes, pool, probe_bytes, wasm};
use instance_pool::wasmtime::PooledModule;
use instance_pool::{Error, MemoryImage, PoolingInstanceAllocator, Resource};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use wasmtime::{Engine, Store};

/// Polls `f` to completion on this thread, parking while it waits.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A multi-threaded executor (tokio's, say) needs the futures `Send`.
fn sendable<F: Future + Send>(f: F) -> F {
    f
}

/// An async limiter that makes every decision wait one poll.
struct Yielding;

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What Wasmtime's `#[async_trait]` methods return.
type Decision<'a> = std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<bool>> + Send + 'a>>;

impl wasmtime::ResourceLimiterAsync for Yielding {
    fn memory_growing<'a, 'b>(&'a mut self, _: usize, _: usize, _: Option<usize>) -> Decision<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async {
            YieldOnce(false).await;
            Ok(true)
        })
    }
    fn table_growing<'a, 'b>(&'a mut self, _: usize, _: usize, _: Option<usize>) -> Decision<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async { Ok(true) })
    }
}

/// Two instantiations polled in turn on one thread, each waiting on its
/// limiter before its memory is made: each memory gets its own module's
/// image, so the reservation is the current one at every poll.
#[test]
fn interleaved_async_instantiations_each_get_their_own_image() {
    let pool = pool(SHAPES[0], 2);
    let engine = engine_on(&pool);
    let one = baked(&pool, &engine, PROBE);
    let other = one
        .with_image(0, MemoryImage::new(b"the other").unwrap())
        .unwrap();
    let store = |engine: &Engine| {
        let mut s = Store::new(engine, Yielding);
        s.limiter_async(|l| l);
        s
    };
    let (mut a, mut b) = (store(&engine), store(&engine));
    let (ia, ib) = {
        let mut cx = Context::from_waker(Waker::noop());
        let mut fa = pin!(one.instantiate_async(&mut a, &[]));
        let mut fb = pin!(other.instantiate_async(&mut b, &[]));
        let (mut ra, mut rb) = (None, None);
        let mut polls = 0;
        while ra.is_none() || rb.is_none() {
            if ra.is_none()
                && let Poll::Ready(r) = fa.as_mut().poll(&mut cx)
            {
                ra = Some(r.unwrap());
            }
            if rb.is_none()
                && let Poll::Ready(r) = fb.as_mut().poll(&mut cx)
            {
                rb = Some(r.unwrap());
            }
            polls += 1;
        }
        assert!(polls > 1, "the limiter made each wait");
        (ra.unwrap(), rb.unwrap())
    };
    let ma = ia.get_memory(&mut a, "memory").unwrap();
    let mb = ib.get_memory(&mut b, "memory").unwrap();
    assert_eq!(ma.data(&a), probe_bytes());
    assert_eq!(&mb.data(&b)[..9], b"the other");
    assert!(mb.data(&b)[9..].iter().all(|&x| x == 0));
}

/// Pool gauges a refusal must leave as they were.
fn gauges(pool: &PoolingInstanceAllocator) -> (u32, u32, usize, usize, u64) {
    let m = pool.metrics();
    (
        m.memories_in_use,
        m.unused_warm_memories,
        m.waiters,
        m.decommit_queue_len,
        m.unused_resident_bytes,
    )
}

fn is_exhausted(e: &wasmtime::Error) -> bool {
    matches!(
        e.downcast_ref::<Error>(),
        Some(Error::PoolExhausted {
            resource: Resource::Memory,
            limit: 1
        })
    )
}

#[test]
fn a_waiting_instantiation_is_woken_when_a_wasmtime_store_drops() {
    let pool = pool(SHAPES[0], 1);
    let engine = engine_on(&pool);
    let module = baked(&pool, &engine, PROBE);
    let mut holder = Store::new(&engine, ());
    module.instantiate(&mut holder, &[]).unwrap();
    let waiter = std::thread::spawn({
        let (engine, module) = (engine.clone(), module.clone());
        move || {
            let mut store = Store::new(&engine, ());
            let wait = module.instantiate_async_timeout(&mut store, &[], Duration::from_secs(600));
            let instance = block_on(wait).unwrap();
            memory_bytes(&mut store, &instance, "memory")
        }
    });
    while pool.metrics().waiters == 0 {
        std::thread::yield_now();
    }
    assert!(!waiter.is_finished());
    drop(holder);
    // Woken by the release, long before its deadline (where a last try
    // would find the slot free anyway).
    let woken_by = std::time::Instant::now() + Duration::from_secs(30);
    while !waiter.is_finished() {
        assert!(
            std::time::Instant::now() < woken_by,
            "the waiter was not woken"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(waiter.join().unwrap(), probe_bytes());
    assert_eq!(gauges(&pool).2, 0, "no waiter left");
}

#[test]
fn an_instantiation_that_waits_in_vain_fails_with_pool_exhausted() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, PROBE);
        let mut holder = Store::new(&engine, ());
        module.instantiate(&mut holder, &[]).unwrap();
        let before = gauges(&pool);
        let mut store = Store::new(&engine, ());
        let wait = module.instantiate_async_timeout(&mut store, &[], Duration::from_millis(20));
        let err = block_on(sendable(wait)).unwrap_err();
        assert!(is_exhausted(&err), "{shape:?}: {err:?}");
        let err = module.instantiate(&mut store, &[]).unwrap_err();
        assert!(is_exhausted(&err), "{shape:?}: at once: {err:?}");
        assert_eq!(gauges(&pool), before, "{shape:?}");
    }
}

#[test]
fn every_refusal_leaves_every_count_as_it_was() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, PROBE);
        // A warm slot holding the image, so a refusal could disturb it.
        module
            .instantiate(&mut Store::new(&engine, ()), &[])
            .unwrap();
        let before = gauges(&pool);
        let unsupported = |r: instance_pool::Result<PooledModule>| {
            assert!(matches!(r, Err(Error::Unsupported(_))), "{shape:?}: {r:?}");
        };
        // Embedder images that cannot be used.
        unsupported(module.with_image(0, MemoryImage::new(&[1; 3 << 16]).unwrap()));
        unsupported(module.with_image(1, MemoryImage::new(b"x").unwrap()));
        let imports = baked(&pool, &engine, r#"(module (import "h" "m" (memory 1)))"#);
        unsupported(imports.with_image(0, MemoryImage::new(b"x").unwrap()));
        let mut small_pages = wasmtime::Config::new();
        small_pages.wasm_custom_page_sizes(true);
        instance_pool::wasmtime::PooledMemoryCreator::new(&pool).install(&mut small_pages);
        let small_pages = Engine::new(&small_pages).unwrap();
        let bytes = baked(&pool, &small_pages, "(module (memory 1 1 (pagesize 1)))");
        unsupported(bytes.with_image(0, MemoryImage::new(b"x").unwrap()));
        let global = r#"(module (global i32 (i32.const 0)) (memory 1) (data (global.get 0) "g"))"#;
        unsupported(baked(&pool, &engine, global).with_image(0, MemoryImage::new(b"x").unwrap()));
        // Instantiations Wasmtime refuses after the slots were taken: a
        // missing import, a minimum larger than a slot.
        let needs = baked(
            &pool,
            &engine,
            r#"(module (import "h" "f" (func)) (memory 1) (data (i32.const 0) "d"))"#,
        );
        assert!(
            needs
                .instantiate(&mut Store::new(&engine, ()), &[])
                .is_err()
        );
        let huge = baked(
            &pool,
            &engine,
            r#"(module (memory 17) (data (i32.const 0) "d"))"#,
        );
        assert!(huge.instantiate(&mut Store::new(&engine, ()), &[]).is_err());
        // An InstancePre of another module.
        let linker = wasmtime::Linker::new(&engine);
        let pre = linker.instantiate_pre(huge.module()).unwrap();
        assert!(
            module
                .instantiate_pre(&mut Store::new(&engine, ()), &pre)
                .is_err()
        );
        // An engine whose memories are not the pool's: the image would be
        // missed, so the instance is refused.
        // On a bounds-checked pool such an engine (signals-based traps on)
        // is refused when the module is made.
        let plain = Engine::default();
        let made = PooledModule::new(&pool, &plain, &wasm(PROBE), wasmtime::Module::from_binary);
        if shape.faults_past_size() {
            let err = made
                .unwrap()
                .instantiate(&mut Store::new(&plain, ()), &[])
                .unwrap_err();
            assert!(
                matches!(err.downcast_ref::<Error>(), Some(Error::Unsupported(_))),
                "{err:?}"
            );
        } else {
            let err = made.unwrap_err();
            assert!(
                matches!(err.downcast_ref::<Error>(), Some(Error::InvalidConfig(m)) if m.contains("signals_based_traps")),
                "{err:?}"
            );
        }
        // Exhaustion, at once and after a wait.
        let mut holder = Store::new(&engine, ());
        module.instantiate(&mut holder, &[]).unwrap();
        let held = gauges(&pool);
        let mut store = Store::new(&engine, ());
        assert!(is_exhausted(
            &module.instantiate(&mut store, &[]).unwrap_err()
        ));
        let wait = module.instantiate_async_timeout(&mut store, &[], Duration::from_millis(5));
        assert!(is_exhausted(&block_on(wait).unwrap_err()));
        assert_eq!(gauges(&pool), held, "{shape:?}");
        drop(holder);
        assert_eq!(gauges(&pool), before, "{shape:?}");
        let m = pool.metrics();
        assert_eq!(
            m.creator_refusals, 1,
            "{shape:?}: only the minimum past the slot"
        );
        // And the pool serves as before.
        let mut store = Store::new(&engine, ());
        let instance = module.instantiate(&mut store, &[]).unwrap();
        assert_eq!(memory_bytes(&mut store, &instance, "memory"), probe_bytes());
    }
}

/// Runs its closure when the thread's locals are torn down.
struct AtExit(std::cell::RefCell<Option<Box<dyn FnOnce()>>>);

impl Drop for AtExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.borrow_mut().take() {
            f();
        }
    }
}

thread_local! {
    static AT_EXIT: AtExit = const { AtExit(std::cell::RefCell::new(None)) };
}

/// An instantiation from a thread-local's destructor, after the crate's
/// own thread-local is gone: no abort, and never a memory without its
/// data (the instance is refused instead).
#[test]
fn an_instantiation_at_thread_exit_does_not_abort_or_lose_data() {
    let pool = pool(SHAPES[0], 2);
    let engine = engine_on(&pool);
    let module = baked(&pool, &engine, PROBE);
    let result = Arc::new(std::sync::Mutex::new(None));
    std::thread::spawn({
        let (engine, module, result) = (engine.clone(), module.clone(), result.clone());
        move || {
            let late = {
                let module = module.clone();
                move || {
                    let mut store = Store::new(&engine, ());
                    let r = module.instantiate(&mut store, &[]);
                    let r = r.map(|i| memory_bytes(&mut store, &i, "memory"));
                    *result.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
                }
            };
            AT_EXIT.with(|a| *a.0.borrow_mut() = Some(Box::new(late)));
            // The crate's thread-local is registered after ours, so it is
            // torn down first.
            let mut store = Store::new(module.module().engine(), ());
            module.instantiate(&mut store, &[]).unwrap();
        }
    })
    .join()
    .unwrap();
    // Here (glibc) the crate's thread-local is gone by then: refused.
    match result.lock().unwrap().take().expect("the destructor ran") {
        Ok(bytes) => assert_eq!(bytes, probe_bytes()),
        Err(e) => assert!(e.contains("did not get its image"), "{e}"),
    }
    assert_eq!(pool.metrics().memories_in_use, 0);
}
