//! Revoking a batch of released slots ([`Queued`]): the syscalls that
//! discard what their tenants populated and make the part past each
//! layout's minimum fault again, one TLB flush for many slots where the
//! kernel allows. Each slot of the batch is then handed to `done`, free
//! (or, if its batch failed, scrubbed first).

use super::at_rest::Queued;
use super::memory::Parked;
use crate::sys::{self, Claim, SlotPtr};
use std::io;

/// The discards of a batch: each slot's populated runs, then its tail,
/// a range that starts where the last one ends joined to it.
fn discards(batch: &[Queued], with_tails: bool) -> Vec<(SlotPtr, usize)> {
    let mut ranges: Vec<(SlotPtr, usize)> = Vec::new();
    let mut add = |start: SlotPtr, len: usize| match ranges.last_mut() {
        Some((s, l)) if s.as_ptr() as usize + *l == start.as_ptr() as usize => *l += len,
        _ => ranges.push((start, len)),
    };
    for q in batch {
        for &(off, len) in q.written() {
            add(q.at(off), len);
        }
        if with_tails && q.to() > q.from() {
            add(q.at(q.from()), q.to() - q.from());
        }
    }
    ranges
}

/// Revokes released slots that use guard markers, any slots, neighbours
/// or not: discards every populated run and every tail (one
/// `process_madvise`, one TLB flush, where the kernel has it and `batched`
/// says so), then marks every tail, now empty, which needs no flush. A
/// lone tail and nothing else is one `MADV_GUARD_INSTALL`, which discards
/// as it marks. Merging neighbours would mark their unreached parts too, at
/// 8 bytes of page table per page.
pub(crate) fn revoke_marked(
    batch: Vec<Queued>,
    batched: bool,
    mut done: impl FnMut(Claim, Parked),
) {
    use sys::RangeAdvice::*;
    let discard = discards(&batch, true);
    let mark: Vec<_> = batch
        .iter()
        .filter(|q| q.to() > q.from())
        .map(|q| (q.at(q.from()), q.to() - q.from()))
        .collect();
    let marks_all = discard.len() == 1 && mark.len() == 1 && discard[0] == mark[0];
    // SAFETY: each range lies inside a slot this batch holds (by its claim),
    // released, and referenced by nobody.
    let revoked: io::Result<()> = unsafe {
        if marks_all || discard.is_empty() {
            Ok(())
        } else {
            sys::madvise_ranges(&discard, DontNeed, batched)
        }
        .and_then(|()| sys::madvise_ranges(&mark, GuardInstall, batched))
    };
    let ok = revoked.is_ok();
    for q in batch {
        let (claim, parked) = q.finish(ok);
        done(claim, parked);
    }
}

/// Revokes released slots on the `mprotect` path: discards every populated
/// run and tail (one `process_madvise` where `batched`, else one `madvise`
/// a range), then makes the tails `PROT_NONE`, those of neighbouring slots
/// merged into one range (the tail of the first, the guards between, the
/// later ones from their start) for one `mprotect`. A failed slot is
/// scrubbed.
pub(crate) fn revoke_protected(
    mut batch: Vec<Queued>,
    batched: bool,
    mut done: impl FnMut(Claim, Parked),
) {
    batch.sort_unstable_by_key(|q| q.base().as_ptr() as usize);
    let discard = discards(&batch, true);
    // SAFETY: each range lies inside a slot this batch holds (by its claim),
    // released, and referenced by nobody.
    let discarded =
        unsafe { sys::madvise_ranges(&discard, sys::RangeAdvice::DontNeed, batched) }.is_ok();
    let mut rest = batch.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut run = vec![first];
        while let Some(next) = rest.next_if(|n| follows(run.last().unwrap(), n)) {
            run.push(next);
        }
        let last = &run[run.len() - 1];
        let (start, end) = (run[0].at(run[0].from()), last.at(last.to()));
        let len = (end.as_ptr() as usize).saturating_sub(start.as_ptr() as usize);
        // SAFETY: the range runs from inside the first slot to inside the
        // last; each slot between starts right after the previous one's
        // trailing guard (`follows`), so it covers only slots this batch
        // holds by their claims and the guards between them, which belong
        // to no one; nothing references any of it.
        let ok = discarded && (len == 0 || unsafe { sys::protect_none(start, len) }.is_ok());
        for q in run {
            let (claim, parked) = q.finish(ok);
            done(claim, parked);
        }
    }
}

/// Whether `next`'s tail can join a run ending with `last`'s: it starts at
/// its byte 0, right after `last`'s slot and trailing guard (past `last`'s
/// tail, the rest of its slot faults already).
fn follows(last: &Queued, next: &Queued) -> bool {
    let stride = last.capacity_and_guard();
    next.from() == 0
        && next.capacity_and_guard() == stride
        && next.base().as_ptr() as usize == last.base().as_ptr() as usize + stride
}
