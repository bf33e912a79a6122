//! Guards after a release, observed in child processes (see
//! `common::guard`): the bytes a tenant grew into past its minimum fault
//! for the next tenant of its slot, whatever that one's minimum, on every
//! shape and way of resetting.
//!
//! A released slot stays open up to its layout's minimum (the next tenant
//! of that layout reaches it anyway); what lies past the minimum must be
//! closed by the release itself. A next tenant's own instantiation only
//! closes what lies below the old minimum, so each case writes at or past
//! the old minimum.

mod common;
use common::config::MIB;
use common::guard::{Expect, addr, config, run, tenant};

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;
/// The first tenant's minimum, in pages.
const OLD_MIN: u64 = 4;
/// What the first tenant grows to, in pages.
const OLD_SIZE: u64 = 12;

/// How the slot is reset between the two tenants.
#[derive(Clone, Copy)]
struct Reset {
    keep_resident: usize,
    batch: usize,
    image: bool,
}

const PLAIN: Reset = Reset {
    keep_resident: 0,
    batch: 1,
    image: false,
};

/// A pool of `slots`: every slot's first tenant (with a minimum of
/// [`OLD_MIN`] pages) grows to [`OLD_SIZE`] pages, fills them and leaves;
/// then a tenant with a minimum of `next_min` pages takes a slot the first
/// ones used. The address is `base + offset` of that tenant's memory.
fn next_tenant(slots: u32, reset: Reset, next_min: u64, offset: usize) -> *mut u8 {
    let mut c = config(slots);
    c.memory_keep_resident(reset.keep_resident)
        .decommit_batch_size(reset.batch);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let bytes = vec![3u8; 5000];
    let img = reset.image.then_some(bytes.as_slice());
    let firsts: Vec<_> = (0..slots).map(|_| tenant(&pool, OLD_MIN, img)).collect();
    let mut bases = Vec::new();
    for (mut store, m) in firsts {
        m.grow(&mut store, OLD_SIZE - OLD_MIN).unwrap();
        m.data_mut(&mut store).fill(0xEE);
        bases.push(m.data_ptr(&store));
    }
    // Each store is dropped at the end of its turn of the loop: with a
    // batch of `slots`, the last drop revokes them all at once.
    let (store, m) = tenant(&pool, next_min, img);
    assert!(bases.contains(&m.data_ptr(&store)), "not a used slot");
    let size = m.data_size(&store);
    assert_eq!(size, next_min as usize * PAGE);
    let data = m.data(&store);
    let image = img.unwrap_or(&[]);
    assert_eq!(&data[..image.len()], image);
    assert!(data[image.len()..].iter().all(|&b| b == 0));
    std::mem::forget(pool);
    addr(store, m, offset as isize)
}

const OLD_MIN_BYTE: usize = OLD_MIN as usize * PAGE;
const OLD_LAST_BYTE: usize = OLD_SIZE as usize * PAGE - 1;

#[test]
fn write_at_data_size_of_a_next_tenant_of_the_same_minimum_faults() {
    run(
        "write_at_data_size_of_a_next_tenant_of_the_same_minimum_faults",
        Expect::Fault,
        || next_tenant(1, PLAIN, OLD_MIN, OLD_MIN_BYTE),
    );
}

#[test]
fn write_before_data_size_of_a_next_tenant_of_the_same_minimum_does_not_fault() {
    run(
        "write_before_data_size_of_a_next_tenant_of_the_same_minimum_does_not_fault",
        Expect::NoFault,
        || next_tenant(1, PLAIN, OLD_MIN, OLD_MIN_BYTE - 1),
    );
}

#[test]
fn write_at_last_byte_the_previous_tenant_reached_faults_for_the_same_minimum() {
    run(
        "write_at_last_byte_the_previous_tenant_reached_faults_for_the_same_minimum",
        Expect::Fault,
        || next_tenant(1, PLAIN, OLD_MIN, OLD_LAST_BYTE),
    );
}

#[test]
fn write_at_the_previous_minimum_faults_for_a_smaller_next_tenant() {
    run(
        "write_at_the_previous_minimum_faults_for_a_smaller_next_tenant",
        Expect::Fault,
        || next_tenant(1, PLAIN, 2, OLD_MIN_BYTE),
    );
}

#[test]
fn write_at_last_byte_the_previous_tenant_reached_faults_for_a_smaller_next_tenant() {
    run(
        "write_at_last_byte_the_previous_tenant_reached_faults_for_a_smaller_next_tenant",
        Expect::Fault,
        || next_tenant(1, PLAIN, 2, OLD_LAST_BYTE),
    );
}

/// The whole slot kept resident: the release restores up to the minimum
/// in place and only closes what lies past it.
#[test]
fn write_past_the_previous_minimum_faults_with_the_slot_kept_resident() {
    let reset = Reset {
        keep_resident: MIB,
        ..PLAIN
    };
    run(
        "write_past_the_previous_minimum_faults_with_the_slot_kept_resident",
        Expect::Fault,
        || next_tenant(1, reset, OLD_MIN, OLD_MIN_BYTE),
    );
}

#[test]
fn write_past_the_previous_minimum_faults_with_an_image_and_part_kept_resident() {
    let reset = Reset {
        keep_resident: 2 * PAGE,
        batch: 1,
        image: true,
    };
    run(
        "write_past_the_previous_minimum_faults_with_an_image_and_part_kept_resident",
        Expect::Fault,
        || next_tenant(1, reset, 2, OLD_LAST_BYTE),
    );
}

/// Three slots released in one batch (one call for all of them where the
/// kernel batches).
#[test]
fn write_past_the_previous_minimum_faults_after_a_batched_release() {
    let reset = Reset { batch: 3, ..PLAIN };
    run(
        "write_past_the_previous_minimum_faults_after_a_batched_release",
        Expect::Fault,
        || next_tenant(3, reset, OLD_MIN, OLD_MIN_BYTE),
    );
}

/// The release waits in a batch that only the next acquisition, finding
/// no free slot, flushes.
#[test]
fn write_past_the_previous_minimum_faults_after_a_release_flushed_by_exhaustion() {
    let reset = Reset {
        keep_resident: MIB,
        batch: 4,
        image: true,
    };
    run(
        "write_past_the_previous_minimum_faults_after_a_release_flushed_by_exhaustion",
        Expect::Fault,
        || next_tenant(1, reset, 2, OLD_LAST_BYTE),
    );
}
