//! The slot layer: what is done to a memory or table slot, whoever owns it.
//!
//! [`MemorySlot`] is one linear memory's place in the address space, from
//! its first instantiation to its last reset; [`TableSlot`] is the same for
//! a table. The allocators decide *which* slot a tenant gets (a pool's free
//! lists, or a fresh reservation); these types decide *what is done to it*:
//! mapping an image, growing, resetting in place, revoking access, and
//! scrubbing after a failure. Besides [`sys`](crate::sys), they are the only
//! code that reads or writes slot bytes through raw pointers.
//!
//! # The states of a memory slot
//!
//! ```text
//!            prepare                    release
//!   Cold ───────────────► InUse ───────────────────► Queued ──revoke──► Warm
//!    ▲                    │  ▲ grow / reset           (bytes past          │
//!    │                    │  └──────────┘             keep_resident)       │
//!    │                    └──── release, nothing past keep_resident ──────►│
//!    │                                                                     │
//!    └── scrub ◄── NeedsScrub ◄── a reset or prepare that failed           │
//!                      │                                                   │
//!                      └────────────────── prepare (scrubs first) ◄────────┘
//! ```
//!
//! - **Cold**: never used; all `PROT_NONE`, no image, no resident page.
//! - **InUse**: held by a store. `[0, size)` is read-write, the rest of the
//!   slot `PROT_NONE`; if the memory has a mapped image, `[0, image)` is a
//!   private (copy-on-write) mapping of its file.
//! - **Queued**: released; `[0, keep_resident)` is already restored, and
//!   `[keep_resident, accessible)` waits in a batch to be discarded and made
//!   `PROT_NONE` ([`revoke`]). Not handed out until its batch is done.
//! - **Warm**: free, previously used. `[0, accessible)` is read-write and
//!   holds exactly what a fresh slot holds there (the image's bytes, then
//!   zeroes); the image stays mapped, so the next instance of the same
//!   image needs no `mmap`.
//! - **NeedsScrub**: a reset failed part-way. Its protections are unknown
//!   (an `mprotect` can fail half done), so nothing may write to it; it is
//!   replaced by a fresh `PROT_NONE` mapping before anyone gets it again.
//!
//! The invariant every transition keeps: a slot's recorded `accessible`
//! length is exactly the read-write part, unless `needs_scrub` is set; and
//! no byte of `[0, accessible)` outside the current tenant's writes differs
//! from a fresh slot with the same image. So a tenant never reads a byte
//! another tenant wrote.

mod at_rest;
mod memory;
mod resize;
mod restore;
mod revoke;
mod stack;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use at_rest::{Queued, Released};
pub(crate) use memory::{ImageWork, MemorySlot, Parked, SlotMode};
pub(crate) use revoke::{revoke_marked, revoke_protected};
pub(crate) use stack::StackSlot;
pub(crate) use table::TableSlot;
