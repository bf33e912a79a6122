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
use std::sync::atomic::{AtomicU64, Ordering};

const _: () = assert!(align_of::<AtomicU64>() == align_of::<u64>());

/// A reservation of `count` slots of `stride` bytes after `pre` bytes.
#[derive(Debug)]
pub struct Slab {
    map: Mmap,
    pre: usize,
    stride: usize,
    count: u32,
    /// One bit a slot: claimed.
    claimed: Box<[AtomicU64]>,
}

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
        let words = (count as usize).div_ceil(64);
        // Zeroed by the allocator (lazily, for a large pool): no slot is
        // claimed. `vec!` of zeroes is one zeroed allocation; building
        // atomics one by one would touch every page of a large bitmap.
        let raw = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut [AtomicU64];
        // SAFETY: `AtomicU64` has the size, alignment (checked below) and
        // bit validity of `u64`, so the zeroed `u64` slice is a valid slice
        // of atomics, and ownership of the allocation moves to the new box.
        let claimed: Box<[AtomicU64]> = unsafe { Box::from_raw(raw) };
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
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        let was = self.claimed[word].fetch_or(bit, Ordering::Acquire);
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
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        self.claimed[word].fetch_and(!bit, Ordering::Release);
    }
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
