//! [`Slab`]: one reservation carved into equal slots, and the arithmetic
//! every pool shares:
//!
//! ```text
//!  ┌─────┬────────┬─────┬────────┬─────┬─────┬──────────┬─────┐
//!  │ pre │ slot 0 │ gap │ slot 1 │ gap │ ... │ slot N-1 │ gap │
//!  └─────┴────────┴─────┴────────┴─────┴─────┴──────────┴─────┘
//!        ◄───── stride ──►
//!  slot(i) = reservation + pre + i * stride
//! ```
//!
//! A memory pool's gap is the guard after each slot (and `pre` an optional
//! one before the first); a stack's guard is below it, so a stack pool
//! puts one guard in `pre` and one in each gap; a table pool has neither.
//!
//! A slot is used through a [`Claim`]: [`Slab::claim`] hands out each
//! slot to one holder at a time (a bit per slot says it is out), so the
//! slot types built on a claim may treat its bytes as theirs alone whatever
//! the free lists above do: a free list handing a slot out twice panics
//! here instead of aliasing two tenants.

use super::{Mmap, SlotPtr};
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

/// A reservation of `count` slots of `stride` bytes after `pre` bytes.
#[derive(Debug)]
pub struct Slab {
    map: Mmap,
    pre: usize,
    stride: usize,
    count: u32,
    /// One bit a slot: claimed; [`SLOTS_PER_LINE`] slots a cache line.
    claimed: Box<[Line]>,
}

/// Slots whose claim bits share a cache line: few, so that threads working
/// on neighbouring blocks of slots (the free lists hand out contiguous
/// blocks per thread) rarely write the same line.
const SLOTS_PER_LINE: usize = 8;

/// A cache line of claim bits.
#[derive(Debug)]
#[repr(align(64))]
struct Line(AtomicU8);

/// One slot of a [`Slab`], held alone until given back with
/// [`Slab::unclaim`]: `[base - pre or gap, base + stride)` (the slot, the
/// gap after it, and the gap or `pre` before it) lies inside the slab.
#[derive(Debug)]
pub struct Claim {
    index: u32,
    base: SlotPtr,
    len: usize,
}

impl Claim {
    /// The slot's number in its slab.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The slot's first byte.
    pub fn base(&self) -> SlotPtr {
        self.base
    }

    /// Bytes from the slot's first byte to the next slot's (its stride):
    /// the slot and the gap after it.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Slab {
    /// Reserves `pre + count * (slot + gap)` bytes: `PROT_NONE` (to be
    /// opened slot by slot), or read-write when `read_write`.
    /// `ErrorKind::InvalidInput` if the size overflows.
    ///
    /// # References
    /// mmap(2)
    pub fn new(
        count: u32,
        pre: usize,
        slot: usize,
        gap: usize,
        read_write: bool,
    ) -> io::Result<Slab> {
        let stride = slot.checked_add(gap);
        let len = stride
            .and_then(|s| s.checked_mul(count as usize))
            .and_then(|l| l.checked_add(pre));
        let (Some(stride), Some(len)) = (stride, len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reservation overflows",
            ));
        };
        let map = if read_write {
            Mmap::read_write(len)?
        } else {
            Mmap::reserve(len)?
        };
        let claimed = zeroed_lines((count as usize).div_ceil(SLOTS_PER_LINE))?;
        Ok(Slab {
            map,
            pre,
            stride,
            count,
            claimed,
        })
    }

    /// The reservation's length in bytes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Bytes from one slot's first byte to the next's.
    #[cfg(test)]
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Takes slot `index` for one holder.
    ///
    /// # Panics
    /// If `index` is past the last slot, or the slot is claimed already:
    /// the caller's free lists are wrong, and handing the slot out would
    /// let two holders write the same bytes.
    pub fn claim(&self, index: u32) -> Claim {
        assert!(index < self.count, "slot {index} of {}", self.count);
        let (line, bit) = line_and_bit(index);
        let was = self.claimed[line].0.fetch_or(bit, Ordering::Acquire);
        assert!(was & bit == 0, "slot {index} claimed twice");
        let offset = self.pre + index as usize * self.stride;
        // SAFETY: `index < count`, so `offset` lies inside the reservation
        // of `pre + count * stride` bytes.
        let base = unsafe { self.map.ptr().add(offset) };
        Claim {
            index,
            base,
            len: self.stride,
        }
    }

    /// Gives back a slot [`claim`](Self::claim)ed from this slab.
    ///
    /// # Panics
    /// If the claim is not of this slab.
    pub fn unclaim(&self, claim: Claim) {
        let Claim { index, base, .. } = claim;
        let offset = self.pre + index as usize * self.stride;
        assert!(
            index < self.count
                && base.as_ptr() as usize == self.map.ptr().as_ptr() as usize + offset,
            "a claim given back to another slab"
        );
        let (line, bit) = line_and_bit(index);
        self.claimed[line].0.fetch_and(!bit, Ordering::Release);
    }
}

fn line_and_bit(index: u32) -> (usize, u8) {
    let i = index as usize;
    (i / SLOTS_PER_LINE, 1 << (i % SLOTS_PER_LINE))
}

/// `n` lines of unclaimed slots, zeroed by the allocator (lazily, for a
/// large pool: building them one by one would touch every page).
fn zeroed_lines(n: usize) -> io::Result<Box<[Line]>> {
    if n == 0 {
        return Ok(Box::new([]));
    }
    let layout = std::alloc::Layout::array::<Line>(n)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reservation overflows"))?;
    // SAFETY: `layout` has a non-zero size (n > 0 lines of 64 bytes).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Line>();
    if ptr.is_null() {
        return Err(io::ErrorKind::OutOfMemory.into());
    }
    // SAFETY: `ptr` is a fresh allocation of `n` `Line`s made with the
    // global allocator and `Layout::array::<Line>(n)`, as `Box<[Line]>`
    // expects; all-zero bytes are a valid `Line` (an `AtomicU8` of 0, then
    // padding).
    Ok(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_and_at_their_offsets() {
        let page = super::super::page_size();
        let slab = Slab::new(3, page, 2 * page, page, false).unwrap();
        assert_eq!((slab.len(), slab.stride()), (10 * page, 3 * page));
        let c = slab.claim(2);
        let start = slab.map.ptr().as_ptr() as usize;
        assert_eq!(c.base().as_ptr() as usize, start + 7 * page);
        let twice = std::panic::catch_unwind(|| slab.claim(2));
        assert!(twice.is_err(), "a slot claimed twice");
        slab.unclaim(c);
        slab.unclaim(slab.claim(2));
        assert!(std::panic::catch_unwind(|| slab.claim(3)).is_err());
    }

    #[test]
    fn an_overflowing_slab_is_refused_before_any_mapping() {
        let e = Slab::new(u32::MAX, 0, usize::MAX / 2, 0, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
