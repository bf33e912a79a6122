//! [`PooledStackCreator`]: Wasmtime's async fiber stacks from a
//! [`StackPool`].

use crate::{PooledStack, StackPool};
use std::ops::Range;
use std::sync::Arc;

/// A [`wasmtime::StackCreator`] that hands Wasmtime stacks of a
/// [`StackPool`]. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct PooledStackCreator {
    pool: StackPool,
}

impl PooledStackCreator {
    /// A creator drawing from `pool` (a clone of it: the pool is shared).
    pub fn new(pool: &StackPool) -> Self {
        PooledStackCreator { pool: pool.clone() }
    }

    /// Sets this creator on `config` with `async_stack_size` set to the
    /// pool's `stack_size`.
    pub fn install(self, config: &mut wasmtime::Config) -> &mut wasmtime::Config {
        let size = self.pool.config().stack_size;
        config
            .async_stack_size(size)
            .with_host_stack(Arc::new(self))
    }
}

// SAFETY: every stack returned is a `PooledStack`: page aligned, read-write,
// zero, held alone by the returned box until Wasmtime drops it, with a
// guard below it that faults (the stack pool's invariants).
unsafe impl wasmtime::StackCreator for PooledStackCreator {
    fn new_stack(
        &self,
        size: usize,
        _zeroed: bool,
    ) -> wasmtime::Result<Box<dyn wasmtime::StackMemory>> {
        let have = self.pool.config().stack_size;
        if size > have {
            wasmtime::bail!(
                "instance_pool: Wasmtime asks a fiber stack of {size} bytes, above the StackPool's stack_size of {have}; set Config::async_stack_size to at most {have}"
            );
        }
        // Every pooled stack is zeroed on release, so `zeroed` holds either way.
        let stack = self.pool.allocate().map_err(wasmtime::Error::new)?;
        Ok(Box::new(PooledStackMemory(stack)))
    }
}

/// A Wasmtime fiber stack in a [`StackPool`]; back to the pool, zeroed, when
/// Wasmtime drops it.
#[derive(Debug)]
pub struct PooledStackMemory(PooledStack);

// SAFETY: the pointers describe the `PooledStack` this value holds, which
// stays ours until dropped; its guard lies right below its bottom.
unsafe impl wasmtime::StackMemory for PooledStackMemory {
    fn top(&self) -> *mut u8 {
        self.0.top()
    }

    fn range(&self) -> Range<usize> {
        self.0.bottom() as usize..self.0.top() as usize
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let bottom = self.0.bottom();
        bottom.wrapping_sub(self.0.guard_size())..bottom
    }
}
