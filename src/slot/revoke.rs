//! Revoking a batch of released slots: the syscalls that discard what
//! their tenants populated and make it fault again, one TLB flush for many
//! slots where the kernel allows. Each slot of the batch is then handed to
//! `done`, free (or, if its batch failed, scrubbed first).

use super::at_rest::Queued;
use super::memory::Parked;
use crate::sys::{self, Claim};
use std::io;

/// Revokes released slots that use guard markers, any slots, neighbours
/// or not: discards the pages of each slot's `[from, to)` (one
/// `process_madvise`, one TLB flush, where the kernel has it and `batched`
/// says so), then marks each `[mark_from, to)`, now empty, which needs no
/// flush. A lone range that is marked whole is one `MADV_GUARD_INSTALL`,
/// which discards as it marks. Merging neighbours would mark their unreached
/// parts too, at 8 bytes of page table per page.
pub(crate) fn revoke_marked(
    batch: Vec<Queued>,
    batched: bool,
    mut done: impl FnMut(Claim, Parked),
) {
    use sys::RangeAdvice::*;
    let range = |q: &Queued, from: usize| (q.at(from), q.to() - from);
    let discard: Vec<_> = batch.iter().map(|q| range(q, q.from())).collect();
    let mark: Vec<_> = batch
        .iter()
        .filter(|q| q.mark_from() < q.to())
        .map(|q| range(q, q.mark_from()))
        .collect();
    let marks_all = discard.len() == 1 && mark.len() == 1 && discard[0] == mark[0];
    // SAFETY: each range lies inside a slot this batch holds (by its claim),
    // released, and referenced by nobody.
    let revoked: io::Result<()> = unsafe {
        if marks_all {
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

/// Revokes released slots on the `mprotect` path: neighbouring slots are
/// merged into one range (the tail of the first, the guards between, the
/// later ones from their start), each range discarded and made `PROT_NONE`
/// with one `madvise` and one `mprotect`. A failed range's slots are
/// scrubbed.
pub(crate) fn revoke_protected(mut batch: Vec<Queued>, mut done: impl FnMut(Claim, Parked)) {
    batch.sort_unstable_by_key(|q| q.base().as_ptr() as usize);
    let mut rest = batch.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut run = vec![first];
        while let Some(next) = rest.next_if(|n| follows(run.last().unwrap(), n)) {
            run.push(next);
        }
        let (start, end) = (
            run[0].at(run[0].from()),
            run[run.len() - 1].at(run[run.len() - 1].to()),
        );
        let len = end.as_ptr() as usize - start.as_ptr() as usize;
        // SAFETY: the range runs from inside the first slot to inside the
        // last; each slot between starts right after the previous one's
        // trailing guard (`follows`), so it covers only slots this batch
        // holds by their claims and the guards between them, which belong
        // to no one; nothing references any of it.
        let ok = len == 0
            || unsafe { sys::decommit(start, len).and_then(|()| sys::protect_none(start, len)) }
                .is_ok();
        for q in run {
            let (claim, parked) = q.finish(ok);
            done(claim, parked);
        }
    }
}

/// Whether `next` can join a run ending with `last`: its range starts at its
/// byte 0, right after `last`'s slot and trailing guard.
fn follows(last: &Queued, next: &Queued) -> bool {
    let stride = last.capacity_and_guard();
    next.from() == 0
        && next.capacity_and_guard() == stride
        && next.base().as_ptr() as usize == last.base().as_ptr() as usize + stride
}
