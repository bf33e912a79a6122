//! [`PooledModule`]: a Wasmtime module whose data segments are memory
//! images, and the instantiate calls that give each memory its slot and
//! image.

use super::bake::{self, Shape};
use super::context::{self, Reservation, Want};
use crate::allocator::{Attempt, Pool};
use crate::layout::MemoryPlan;
use crate::{Error, MemoryImage, MemoryProtection, MemoryType, PoolingInstanceAllocator, Result};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{AsContextMut, Engine, Extern, Instance, InstancePre, Module};

/// A module compiled for an engine whose memories come from a
/// [`PooledMemoryCreator`](super::PooledMemoryCreator), with its data
/// segments baked into [`MemoryImage`]s: each instantiation through it maps
/// a memory's image copy-on-write (or finds it already mapped in a warm
/// slot) instead of Wasmtime copying the segments in. See the
/// [module docs](super#module-images) for what qualifies.
///
/// Instantiate only through its own calls: the module Wasmtime compiled
/// ([`module`](Self::module)) has empty passive segments where the data
/// was, so an instance made by Wasmtime directly would start with zeroed
/// memories. The calls check this and fail rather than run such an
/// instance. Cheap to clone.
#[derive(Clone)]
pub struct PooledModule {
    pool: Arc<Pool>,
    module: Module,
    memories: Arc<[Defined]>,
    /// What each instantiation reserves (see [`wants`]).
    wants: Arc<[Want]>,
    /// The module index of the first defined memory.
    imported: u32,
    refused: Option<Arc<str>>,
    gc_heap: bool,
}

/// A defined memory: its shape, image, and whether Wasmtime writes
/// segments into it at instantiation.
#[derive(Clone)]
struct Defined {
    shape: Shape,
    image: Option<Arc<MemoryImage>>,
    written_by_wasmtime: bool,
}

impl std::fmt::Debug for PooledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let images: Vec<_> = self.memories.iter().map(|m| m.image.clone()).collect();
        f.debug_struct("PooledModule")
            .field("images", &images)
            .field("refused", &self.refused)
            .finish()
    }
}

impl PooledModule {
    /// Bakes `wasm` (a module in the binary format) for `engine`, whose
    /// memories must come from a `PooledMemoryCreator` of `pool`, and
    /// compiles the result with `compile`: `Module::from_binary` where
    /// Wasmtime has a compiler (this crate enables none), or the
    /// embedder's cache of precompiled artifacts (keyed by the bytes it is
    /// given, which are not `wasm`'s when the data was baked).
    ///
    /// The module's data is baked when it qualifies (see
    /// [`fallback_reason`](Self::fallback_reason)); otherwise `wasm` is
    /// compiled unchanged and behaves exactly as that `wasmtime::Module`.
    /// Errors are `compile`'s for the original module (an invalid one), or
    /// [`Error::Os`] if an image cannot be made.
    pub fn new(
        pool: &PoolingInstanceAllocator,
        engine: &Engine,
        wasm: &[u8],
        mut compile: impl FnMut(&Engine, &[u8]) -> wasmtime::Result<Module>,
    ) -> wasmtime::Result<PooledModule> {
        if pool.inner.memory_protection() == MemoryProtection::BoundsChecked
            && engine.get_signals_based_traps()
        {
            return Err(wasmtime::Error::new(Error::InvalidConfig(
                "memory_protection is BoundsChecked, but the engine has signals_based_traps on: its code would rely on faults past each memory's size, which such a pool does not make (PooledMemoryCreator::install turns them off)".into(),
            )));
        }
        let Some(baked) = bake::bake(wasm) else {
            let module = compile(engine, wasm)?;
            return Ok(PooledModule {
                pool: pool.inner.clone(),
                memories: Arc::new([]),
                wants: Arc::new([]),
                imported: 0,
                refused: Some("not a core module in the binary format".into()),
                gc_heap: true,
                module,
            });
        };
        let mut refused = baked.refused.map(Arc::from);
        let module = match &baked.rewritten {
            None => compile(engine, wasm)?,
            // Wasmtime may refuse what it would take unchanged (passive
            // segments with bulk memory turned off): then unchanged.
            Some(rewritten) => match compile(engine, rewritten) {
                Ok(module) => module,
                Err(e) => {
                    let module = compile(engine, wasm)?;
                    let why = format!("the module without active segments was refused: {e}");
                    refused = Some(why.into());
                    module
                }
            },
        };
        let baked_ok = refused.is_none();
        let mut memories = Vec::with_capacity(baked.defined.len());
        for d in baked.defined {
            let image = if baked_ok && !d.data.is_empty() {
                Some(MemoryImage::at(d.start, &d.data).map_err(wasmtime::Error::new)?)
            } else {
                None
            };
            memories.push(Defined {
                shape: d.shape,
                image,
                written_by_wasmtime: d.segments && !baked_ok,
            });
        }
        Ok(PooledModule {
            wants: wants(&pool.inner, &memories),
            pool: pool.inner.clone(),
            module,
            memories: memories.into(),
            imported: baked.imported,
            refused,
            gc_heap: baked.gc_heap,
        })
    }

    /// The module Wasmtime compiled: for its imports and exports, and for
    /// [`Linker::instantiate_pre`](wasmtime::Linker::instantiate_pre) (then
    /// [`instantiate_pre`](Self::instantiate_pre)). Instantiating it any
    /// other way misses the baked data.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Why Wasmtime copies this module's data segments at each
    /// instantiation instead of the module having images, if it does: a
    /// segment with an offset that is not a constant (`global.get`), into an
    /// imported or shared memory, or out of bounds of its memory's minimum
    /// (instantiation traps); a module that may use Wasmtime's GC heap;
    /// data spread thinly over more than 16 MiB. `None`: every segment is
    /// in an image (or there is none).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The image memory `index` (the module's own numbering, imports
    /// first) starts with, if any.
    pub fn image(&self, index: u32) -> Option<&Arc<MemoryImage>> {
        let i = index.checked_sub(self.imported)?;
        self.memories.get(i as usize)?.image.as_ref()
    }

    /// The same module with `image` as memory `index`'s initial contents
    /// (the module's own numbering, imports first), in place of its data:
    /// a snapshot ([`snapshot`](super::snapshot)), say. The image must fit
    /// the memory's minimum.
    ///
    /// [`Error::Unsupported`], and nothing changes, if the memory is
    /// imported or does not exist, is shared or has pages other than 64
    /// KiB, is smaller than the image, or still has Wasmtime's segments
    /// written into it ([`fallback_reason`](Self::fallback_reason) says
    /// why), or if the module may use Wasmtime's GC heap (whose request
    /// cannot be told from a memory's).
    pub fn with_image(&self, index: u32, image: Arc<MemoryImage>) -> Result<PooledModule> {
        let unsupported = |why: String| Err(Error::Unsupported(format!("memory {index}: {why}")));
        let Some(i) = index
            .checked_sub(self.imported)
            .filter(|i| (*i as usize) < self.memories.len())
        else {
            return unsupported("not a memory the module defines".into());
        };
        let memory = &self.memories[i as usize];
        if !memory.shape.takes_images() {
            return unsupported("shared, or pages other than 64 KiB".into());
        }
        let min = memory.shape.min_bytes().unwrap_or(u64::MAX);
        if image.len() as u64 > min {
            return unsupported(format!(
                "image of {} bytes exceeds the minimum of {min} bytes",
                image.len()
            ));
        }
        if memory.written_by_wasmtime {
            let why = self.refused.as_deref().unwrap_or_default();
            return unsupported(format!("Wasmtime writes data segments into it ({why})"));
        }
        if self.gc_heap {
            return unsupported(
                "the module may use Wasmtime's GC heap, whose memory request cannot be told from this memory's".into(),
            );
        }
        let mut memories = self.memories.to_vec();
        memories[i as usize].image = Some(image);
        Ok(PooledModule {
            wants: wants(&self.pool, &memories),
            memories: memories.into(),
            ..self.clone()
        })
    }

    /// Instantiates with `imports` (as [`Instance::new`]), each memory in a
    /// slot with its image. Fails at once with
    /// [`Error::PoolExhausted`] (inside the `wasmtime::Error`:
    /// `downcast_ref` finds it) if the pool lacks the slots.
    pub fn instantiate(
        &self,
        mut store: impl AsContextMut,
        imports: &[Extern],
    ) -> wasmtime::Result<Instance> {
        let mut reservation = Some(self.reserve_now()?);
        let result = {
            let _entered = context::enter(&mut reservation);
            Instance::new(&mut store, &self.module, imports)
        };
        self.finish(reservation, result)
    }

    /// [`instantiate`](Self::instantiate) through an
    /// [`InstancePre`] of [`module`](Self::module) (a `Linker`'s imports).
    pub fn instantiate_pre<T: 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        pre: &InstancePre<T>,
    ) -> wasmtime::Result<Instance> {
        self.check_pre(pre)?;
        let mut reservation = Some(self.reserve_now()?);
        let result = {
            let _entered = context::enter(&mut reservation);
            pre.instantiate(&mut store)
        };
        self.finish(reservation, result)
    }

    /// [`instantiate`](Self::instantiate) with [`Instance::new_async`].
    /// When the pool lacks the slots it waits for them, first come first
    /// served, for up to the pool's
    /// [`admission_timeout`](crate::PoolingConfig::admission_timeout), then
    /// fails with [`Error::PoolExhausted`].
    pub async fn instantiate_async(
        &self,
        mut store: impl AsContextMut,
        imports: &[Extern],
    ) -> wasmtime::Result<Instance> {
        let timeout = self.pool.admission_timeout();
        let run = Instance::new_async(&mut store, &self.module, imports);
        self.run_async(timeout, run).await
    }

    /// [`instantiate_async`](Self::instantiate_async), waiting up to
    /// `timeout` for the slots (zero: not at all).
    pub async fn instantiate_async_timeout(
        &self,
        mut store: impl AsContextMut,
        imports: &[Extern],
        timeout: Duration,
    ) -> wasmtime::Result<Instance> {
        let run = Instance::new_async(&mut store, &self.module, imports);
        self.run_async(timeout, run).await
    }

    /// [`instantiate_pre`](Self::instantiate_pre) with
    /// [`InstancePre::instantiate_async`], waiting for slots as
    /// [`instantiate_async`](Self::instantiate_async) does.
    pub async fn instantiate_pre_async<T: Send + 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        pre: &InstancePre<T>,
    ) -> wasmtime::Result<Instance> {
        self.check_pre(pre)?;
        let timeout = self.pool.admission_timeout();
        let run = pre.instantiate_async(&mut store);
        self.run_async(timeout, run).await
    }

    /// Takes the slots (waiting up to `timeout`), then polls `run` with the
    /// reservation current at every poll.
    async fn run_async<R>(
        &self,
        timeout: Duration,
        run: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let mut reservation = Some(match deadline(timeout) {
            None => self.reserve_now()?,
            Some(deadline) => {
                let attempt = |attempt| Reservation::take(&self.pool, &self.wants, attempt);
                self.pool.admission.run(deadline, attempt).await?
            }
        });
        let mut run = std::pin::pin!(run);
        let result = std::future::poll_fn(|cx| {
            let _entered = context::enter(&mut reservation);
            run.as_mut().poll(cx)
        })
        .await;
        self.finish(reservation, result)
    }

    fn reserve_now(&self) -> Result<Box<Reservation>> {
        Reservation::take(&self.pool, &self.wants, Attempt::Alone)
    }

    fn check_pre<T: 'static>(&self, pre: &InstancePre<T>) -> Result<()> {
        if Module::same(pre.module(), &self.module) {
            return Ok(());
        }
        Err(Error::Unsupported(
            "the InstancePre is not of this PooledModule's module".into(),
        ))
    }

    /// Gives back what Wasmtime did not take; a success whose memory missed
    /// its image is an error.
    fn finish<R>(
        &self,
        reservation: Option<Box<Reservation>>,
        result: wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        // `None` only if the thread's cell went away while Wasmtime ran
        // (the reservation then went back when the cell dropped).
        let missed = reservation.map_or(Ok(()), |mut r| r.finish());
        let r = result?;
        if let Err(i) = missed {
            return Err(wasmtime::Error::new(Error::Unsupported(format!(
                "memory {} did not get its image: the engine's memories are not made by a PooledMemoryCreator of this PooledModule's pool (install one), or the thread is exiting",
                self.imported as usize + i
            ))));
        }
        Ok(r)
    }
}

/// A slot for each defined memory, with its image; none at all if a memory
/// can never have a slot (Wasmtime's request then fails with the creator's
/// message).
fn wants(pool: &Pool, memories: &[Defined]) -> Arc<[Want]> {
    let slot = pool.memory_geometry().0 as u64;
    let fits =
        |m: &Defined| m.shape.takes_images() && m.shape.min_bytes().is_some_and(|b| b <= slot);
    if !memories.iter().all(fits) {
        return Arc::new([]);
    }
    let want = |m: &Defined| Want {
        plan: MemoryPlan {
            ty: MemoryType::new(m.shape.minimum, None),
            image: m.image.clone(),
        },
        shape: m.image.as_ref().map(|_| m.shape),
    };
    memories.iter().map(want).collect()
}

/// An image of `memory`'s bytes as they are now, trailing zero pages left
/// out ([`MemoryImage::from_memory`]): a snapshot of a live instance, to
/// start others from with [`PooledModule::with_image`]. Such an image must
/// fit the memory's minimum, so snapshot before the memory grows past it,
/// or while what lies past it is still zero.
pub fn snapshot(
    store: impl wasmtime::AsContext,
    memory: &wasmtime::Memory,
) -> Result<Arc<MemoryImage>> {
    MemoryImage::from_memory(memory.data(&store))
}

/// When a wait of `timeout` from now ends (`None`: no wait); past what an
/// `Instant` holds, a century.
fn deadline(timeout: Duration) -> Option<Instant> {
    let now = Instant::now();
    (!timeout.is_zero()).then(|| {
        now.checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now)
    })
}
