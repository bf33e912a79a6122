//! [`StackPoolConfig`]: how a [`StackPool`](crate::StackPool) is laid out.

use super::MemoryProtection;
use crate::{Error, Result, sys};

/// How a [`StackPool`](crate::StackPool) is laid out, in the style of
/// [`PoolingConfig`](super::PoolingConfig) (Wasmtime's `async_stack_size` and
/// `async_stack_keep_resident` are the same knobs).
///
/// | setter | default | meaning |
/// |---|---|---|
/// | `total_stacks` | 1000 | stacks in the pool |
/// | `stack_size` | 2 MiB | usable bytes of each stack |
/// | `stack_guard_size` | one host page | bytes below each stack that fault |
/// | `stack_keep_resident` | 0 | top bytes of a released stack zeroed with `memset` and kept resident (the rest is discarded with `madvise`) |
/// | `stack_protection` | `Auto` | guards as guard markers in a read-write slab (constant kernel mappings), or `PROT_NONE` mappings (`Mprotect`) |
///
/// Sizes must be multiples of the host page.
#[derive(Clone, Debug)]
pub struct StackPoolConfig {
    pub(crate) total_stacks: u32,
    pub(crate) stack_size: usize,
    pub(crate) stack_guard_size: usize,
    pub(crate) stack_keep_resident: usize,
    pub(crate) stack_protection: MemoryProtection,
}

impl Default for StackPoolConfig {
    fn default() -> Self {
        StackPoolConfig {
            total_stacks: 1000,
            stack_size: 2 << 20,
            stack_guard_size: sys::page_size(),
            stack_keep_resident: 0,
            stack_protection: MemoryProtection::Auto,
        }
    }
}

impl StackPoolConfig {
    setters! {
        /// Stacks in the pool.
        total_stacks / get_total_stacks: u32;
        /// Usable bytes of each stack (a multiple of the host page, not 0).
        stack_size / get_stack_size: usize;
        /// Bytes below each stack that fault (a multiple of the host page,
        /// at least one page).
        stack_guard_size / get_stack_guard_size: usize;
        /// Top bytes of a released stack zeroed with `memset` and kept
        /// resident; the rest is discarded with `madvise`. At most
        /// `stack_size`.
        stack_keep_resident / get_stack_keep_resident: usize;
        /// How the guards fault: guard markers in a read-write reservation
        /// (`Auto` where the kernel has them, Linux 6.13+; a constant number
        /// of kernel mappings), or `PROT_NONE` with each stack made read-write at
        /// its first use (`Mprotect`; two mappings per used stack).
        stack_protection / get_stack_protection: MemoryProtection;
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let page = sys::page_size();
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        for (name, value) in [
            ("stack_size", self.stack_size),
            ("stack_guard_size", self.stack_guard_size),
            ("stack_keep_resident", self.stack_keep_resident),
        ] {
            if value % page != 0 {
                return invalid(format!(
                    "{name} must be a multiple of the host page size ({page}), got {value}"
                ));
            }
        }
        if self.stack_size == 0 {
            return invalid("stack_size must be at least one host page, got 0".into());
        }
        if self.stack_guard_size == 0 {
            return invalid("stack_guard_size must be at least one host page, got 0".into());
        }
        if self.stack_protection == MemoryProtection::BoundsChecked {
            return invalid(
                "stack_protection BoundsChecked applies to linear memories only: a stack's guard must fault"
                    .into(),
            );
        }
        if self.stack_protection == MemoryProtection::GuardMarkers
            && !sys::features().anon_guard_markers
        {
            return invalid(
                "stack_protection is GuardMarkers, but this kernel has no guard markers (MADV_GUARD_INSTALL, Linux 6.13+)"
                    .into(),
            );
        }
        if self.stack_keep_resident > self.stack_size {
            return invalid(format!(
                "stack_keep_resident ({}) exceeds stack_size ({})",
                self.stack_keep_resident, self.stack_size
            ));
        }
        Ok(())
    }
}
