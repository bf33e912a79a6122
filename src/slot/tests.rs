//! State transitions of the slot layer, on real mappings.

use super::*;
use crate::layout::{MemoryPlan, MemoryType};
use crate::sys::{self, Claim};
use crate::{MemoryImage, WASM_PAGE_SIZE};
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;
const CAP: usize = 4 * PAGE;

fn plan(min_pages: u64, image: Option<&Arc<MemoryImage>>) -> MemoryPlan {
    MemoryPlan {
        ty: MemoryType::new(min_pages, Some(4)),
        image: image.cloned(),
    }
}

/// A slab of two slots of `CAP` bytes, no guards: a pool in miniature.
struct Slab(sys::Slab, SlotMode);

impl Slab {
    fn new() -> Slab {
        Slab::with(SlotMode::default())
    }

    fn with(mode: SlotMode) -> Slab {
        Slab(sys::Slab::new(2, 0, CAP, 0, false).unwrap(), mode)
    }

    fn slot(&self, index: u32, parked: Parked) -> MemorySlot {
        MemorySlot::in_slab(self.0.claim(index), CAP, 0, parked, self.1, 0)
    }

    /// A slot given back, as the pool does: its index, and what it keeps.
    fn back(&self, (claim, parked): (Claim, Parked)) -> (u32, Parked) {
        let index = claim.index();
        self.0.unclaim(claim);
        (index, parked)
    }
}

fn ready(released: Released) -> (Claim, Parked) {
    match released {
        Released::Ready(claim, parked) => (claim, parked),
        Released::Revoke(q) => panic!("expected nothing to revoke, got [{}, {})", q.from(), q.to()),
    }
}

fn queued(released: Released) -> Queued {
    match released {
        Released::Revoke(q) => q,
        Released::Ready(..) => panic!("expected a range to revoke"),
    }
}

#[test]
fn a_cold_slot_prepared_without_image_is_zeroed_at_its_minimum() {
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    assert_eq!(
        slot.prepare(&plan(2, None), 2 * PAGE).unwrap(),
        ImageWork::None
    );
    assert_eq!(slot.size(), 2 * PAGE);
    assert!(slot.bytes().iter().all(|&b| b == 0));
    slot.bytes_mut()[2 * PAGE - 1] = 7;
    slot.resize(3 * PAGE).unwrap();
    assert_eq!(slot.bytes()[2 * PAGE - 1], 7);
    assert_eq!(slot.bytes()[3 * PAGE - 1], 0);
}

#[test]
fn a_mapped_image_is_mapped_once_then_reused_by_the_warm_slot() {
    let image = MemoryImage::new(b"image bytes").unwrap();
    assert!(image.is_mapped());
    let slab = Slab::new();
    let p = plan(1, Some(&image));
    let mut slot = slab.slot(0, Parked::default());
    assert_eq!(slot.prepare(&p, PAGE).unwrap(), ImageWork::Mapped);
    assert_eq!(&slot.bytes()[..11], b"image bytes");
    slot.bytes_mut()[..5].copy_from_slice(b"DIRTY");
    slot.bytes_mut()[100] = 1;

    let (index, parked) = slab.back(ready(slot.release(PAGE, &plan(1, None).ty)));
    assert_eq!(parked.affinity(), Some(image.id()));
    assert_eq!(parked.resident, PAGE);
    let mut again = slab.slot(index, parked);
    assert_eq!(again.prepare(&p, PAGE).unwrap(), ImageWork::Reused);
    assert_eq!(&again.bytes()[..11], b"image bytes");
    assert!(again.bytes()[11..].iter().all(|&b| b == 0));
}

#[test]
fn an_empty_image_needs_no_work() {
    let image = MemoryImage::new(b"").unwrap();
    let slab = Slab::new();
    let mut slot = slab.slot(1, Parked::default());
    assert_eq!(
        slot.prepare(&plan(1, Some(&image)), PAGE).unwrap(),
        ImageWork::None
    );
    assert!(slot.bytes().iter().all(|&b| b == 0));
}

#[cfg(feature = "fault-injection")]
#[test]
fn an_image_without_memfd_is_copied_in_and_restored_by_reset() {
    crate::sys::fault::reset();
    crate::sys::fault::fail_nth(1); // memfd_create
    let image = MemoryImage::new(b"copied").unwrap();
    crate::sys::fault::reset();
    assert!(!image.is_mapped());
    let p = plan(1, Some(&image));
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    assert_eq!(slot.prepare(&p, PAGE).unwrap(), ImageWork::Copied);
    assert_eq!(&slot.bytes()[..6], b"copied");
    slot.bytes_mut().fill(1);
    slot.reset(&p, PAGE).unwrap();
    assert_eq!(&slot.bytes()[..6], b"copied");
    assert!(slot.bytes()[6..].iter().all(|&b| b == 0));
}

#[test]
fn switching_images_leaves_nothing_of_the_old_one() {
    let a = MemoryImage::new(&[0xAA; 3 * 4096]).unwrap();
    let b = MemoryImage::new(b"b").unwrap();
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    slot.prepare(&plan(1, Some(&a)), PAGE).unwrap();
    let (index, parked) = slab.back(ready(slot.release(PAGE, &plan(1, None).ty)));
    let mut slot = slab.slot(index, parked);
    assert_eq!(
        slot.prepare(&plan(1, Some(&b)), PAGE).unwrap(),
        ImageWork::Mapped
    );
    assert_eq!(slot.bytes()[0], b'b');
    assert!(slot.bytes()[1..].iter().all(|&x| x == 0));
}

#[test]
fn release_past_keep_resident_queues_the_rest_for_revocation() {
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    slot.prepare(&plan(1, None), PAGE).unwrap();
    slot.resize(3 * PAGE).unwrap();
    slot.bytes_mut().fill(9);
    let q = queued(slot.release(PAGE, &plan(1, None).ty));
    assert_eq!((q.from(), q.to()), (PAGE, 3 * PAGE));
    // The kept part is restored before the slot is queued.
    // SAFETY: `[0, PAGE)` is still read-write and nobody else holds it.
    let kept = unsafe { std::slice::from_raw_parts(q.base().as_ptr(), PAGE) };
    assert!(kept.iter().all(|&b| b == 0));

    let mut back = None;
    revoke_protected(vec![q], false, |claim, parked| back = Some((claim, parked)));
    let (index, parked) = slab.back(back.unwrap());
    assert_eq!(parked.resident, PAGE);
    let mut slot = slab.slot(index, parked);
    slot.prepare(&plan(3, None), 3 * PAGE).unwrap();
    assert!(
        slot.bytes().iter().all(|&b| b == 0),
        "revoked pages read as zero"
    );
}

#[test]
fn a_failed_revocation_scrubs_the_slot() {
    let image = MemoryImage::new(b"img").unwrap();
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    slot.prepare(&plan(2, Some(&image)), 2 * PAGE).unwrap();
    slot.bytes_mut().fill(5);
    let q = queued(slot.release(0, &plan(1, None).ty));
    // As if the batch's syscalls had failed: the slot is remapped fresh.
    let (index, parked) = slab.back(q.finish(false));
    assert_eq!((parked.affinity(), parked.resident), (None, 0));
    let mut slot = slab.slot(index, parked);
    assert_eq!(
        slot.prepare(&plan(2, Some(&image)), 2 * PAGE).unwrap(),
        ImageWork::Mapped
    );
    assert_eq!(&slot.bytes()[..3], b"img");
    assert!(slot.bytes()[3..].iter().all(|&b| b == 0));
}

#[test]
fn a_slot_needing_a_scrub_is_released_untouched_and_scrubbed_before_use() {
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    slot.prepare(&plan(1, None), PAGE).unwrap();
    slot.bytes_mut().fill(3);
    slot.needs_scrub = true;
    // A slot whose protections are unknown: release must not write to it.
    let (index, parked) = slab.back(ready(slot.release(CAP, &plan(1, None).ty)));
    assert_eq!(parked.resident, 0);
    let mut slot = slab.slot(index, parked);
    slot.prepare(&plan(1, None), PAGE).unwrap();
    assert!(
        slot.bytes().iter().all(|&b| b == 0),
        "the scrub remapped the slot"
    );
}

#[test]
fn reset_in_place_restores_the_image_and_the_minimum() {
    let image = MemoryImage::new(b"hello").unwrap();
    let p = plan(1, Some(&image));
    let slab = Slab::new();
    let mut slot = slab.slot(0, Parked::default());
    slot.prepare(&p, PAGE).unwrap();
    slot.resize(2 * PAGE).unwrap();
    slot.bytes_mut().fill(1);
    for keep in [0, PAGE, CAP] {
        slot.reset(&p, keep).unwrap();
        assert_eq!(slot.size(), PAGE);
        assert_eq!(&slot.bytes()[..5], b"hello");
        assert!(slot.bytes()[5..].iter().all(|&b| b == 0), "keep {keep}");
        slot.resize(2 * PAGE).unwrap();
        assert!(slot.bytes()[PAGE..].iter().all(|&b| b == 0), "keep {keep}");
        slot.bytes_mut().fill(1);
    }
}

#[test]
fn an_owned_reservation_has_guards_and_unmaps_on_drop() {
    let mut slot = MemorySlot::reserve(CAP, PAGE).unwrap();
    assert_eq!((slot.capacity(), slot.guard(), slot.size()), (CAP, PAGE, 0));
    slot.prepare(&plan(1, None), PAGE).unwrap();
    slot.bytes_mut()[PAGE - 1] = 1;
    assert!(MemorySlot::reserve(usize::MAX, usize::MAX).is_err());
}

#[test]
fn a_slab_table_grows_with_init_and_clears_to_zero() {
    let slab = sys::Slab::new(4, 0, 4096, 0, true).unwrap();
    let mut t = TableSlot::in_slab(slab.claim(3), 512);
    assert_eq!(t.size(), 0);
    assert!(t.elements().is_empty());
    t.grow(4, 0).unwrap();
    t.grow(6, 9).unwrap();
    assert_eq!(t.elements(), [0, 0, 0, 0, 9, 9]);
    t.elements_mut()[0] = 1;
    assert!(t.grow(513, 0).is_err(), "past the slot's capacity");
    assert_eq!(t.size(), 6);
    assert_eq!(t.clear(0), 6 * 8, "a small table is zeroed in place");
    t.grow(6, 0).unwrap();
    assert_eq!(t.elements(), [0; 6]);
    assert_eq!(t.into_claim().map(|c| c.index()), Some(3));
    assert!(
        std::panic::catch_unwind(|| TableSlot::in_slab(slab.claim(0), 513)).is_err(),
        "more elements than the slot holds"
    );
}

#[test]
fn a_zero_element_slab_table_is_empty_without_touching_memory() {
    let slab = sys::Slab::new(1, 0, 0, 0, true).unwrap();
    let mut t = TableSlot::in_slab(slab.claim(0), 0);
    assert!(t.elements().is_empty());
    assert!(t.elements_mut().is_empty());
    assert!(t.grow(1, 0).is_err());
    assert_eq!(t.clear(4096), 0);
}

#[test]
fn a_heap_table_grows_and_clears() {
    let mut t = TableSlot::on_heap();
    t.grow(3, 7).unwrap();
    assert_eq!(t.elements(), [7, 7, 7]);
    assert_eq!(t.clear(0), 0);
    assert_eq!(t.size(), 0);
    t.grow(2, 0).unwrap();
    assert_eq!(t.elements(), [0, 0]);
}
