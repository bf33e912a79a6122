//! [`MemoryImage`]: a memory's initial contents, kept once in a sealed memfd
//! and mapped copy-on-write into every slot that uses it.

use crate::Result;
use crate::sys::{self, SealedImage};
use std::fmt;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Initial contents of a linear memory, placed at offset 0.
///
/// [`MemoryImage::new`] copies the bytes once into a sealed memfd (padded to
/// whole wasm pages), except its all-zero host pages, which stay holes of
/// the file (zero, and no memory) so leading zeroes and zero pages inside
/// the data cost a scan rather than a page and a copy each. Instantiating a memory with the image maps that file
/// `MAP_PRIVATE | MAP_FIXED` over the start of the slot, so the cost does not
/// depend on the image's size, and a slot keeps the mapping while idle so the
/// next instance of the same image needs no `mmap` at all. Where a memfd
/// cannot be created the image falls back to being copied into each slot;
/// [`MemoryImage::is_mapped`] and the pool's metrics say so.
pub struct MemoryImage {
    id: u64,
    len: usize,
    source: Source,
}

enum Source {
    /// A sealed memfd and a read-only view of it (to restore bytes that a
    /// reset keeps resident).
    Mapped(SealedImage),
    /// The bytes themselves, copied into each slot.
    Copied(Box<[u8]>),
}

impl fmt::Debug for MemoryImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryImage")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl MemoryImage {
    /// An image holding `bytes` at offset 0.
    ///
    /// Where the memfd or its view cannot be made, the image is copied
    /// into each slot instead; the `Result` is kept for a later failure
    /// that has no fallback.
    pub fn new(bytes: &[u8]) -> Result<Arc<MemoryImage>> {
        MemoryImage::at(0, bytes)
    }

    /// An image holding `bytes` at offset `at`, zeroes before: a module's
    /// data placed past its stack, without a buffer of the zeroes. The
    /// caller keeps `at + bytes.len()` within a memory (a `u32` memory's
    /// 4 GiB at most).
    pub(crate) fn at(at: usize, bytes: &[u8]) -> Result<Arc<MemoryImage>> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let len = if bytes.is_empty() {
            0
        } else {
            at + bytes.len()
        };
        let source = if len == 0 {
            Source::Copied(Box::default())
        } else {
            // Whole wasm pages: a memory's minimum is whole wasm pages, so
            // the mapping always fits, and the slot's first page is one
            // kernel mapping instead of an image part and an anonymous part
            // that every later mprotect/madvise would split and merge.
            let mapped_len = len.next_multiple_of(crate::WASM_PAGE_SIZE.max(sys::page_size()));
            match SealedImage::new(at, bytes, mapped_len) {
                Ok(sealed) => Source::Mapped(sealed),
                Err(_) => {
                    let mut copied = vec![0; at];
                    copied.extend_from_slice(bytes);
                    Source::Copied(copied.into())
                }
            }
        };
        Ok(Arc::new(MemoryImage { id, len, source }))
    }

    /// An image of a memory's `bytes` (a snapshot of a live instance's
    /// memory, say) with its trailing zero pages (of the host's page size)
    /// left out: they are zero in a fresh slot anyway.
    pub fn from_memory(bytes: &[u8]) -> Result<Arc<MemoryImage>> {
        let page = sys::page_size();
        let mut len = bytes.len();
        while len > 0 {
            let start = (len - 1) / page * page;
            if bytes[start..len].iter().any(|&b| b != 0) {
                break;
            }
            len = start;
        }
        MemoryImage::new(&bytes[..len])
    }

    /// The image's length in bytes, as given.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the image has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the image is mapped copy-on-write (`true`) or copied into
    /// each slot because no memfd could be made (`false`). An empty image
    /// is neither (`false`): it needs no work at all, and no metric counts
    /// it.
    pub fn is_mapped(&self) -> bool {
        matches!(self.source, Source::Mapped(_))
    }

    /// Whether instantiation copies the bytes in: no memfd, and something
    /// to copy.
    pub(crate) fn is_copied(&self) -> bool {
        !self.is_mapped() && !self.is_empty()
    }

    /// A process-unique identity, the key of slot affinity.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The image's bytes (what a slot holds at `[0, len())`; zeroes follow).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.source {
            Source::Mapped(sealed) => &sealed.bytes()[..self.len],
            Source::Copied(bytes) => bytes,
        }
    }

    /// Bytes of the slot the image's mapping covers (whole wasm pages; the
    /// file is zero past `len()`). 0 for a copied image.
    pub(crate) fn mapped_len(&self) -> usize {
        match &self.source {
            Source::Mapped(sealed) => sealed.len(),
            Source::Copied(_) => 0,
        }
    }

    /// The file to map, for a mapped image.
    pub(crate) fn file(&self) -> Option<impl AsFd + '_> {
        match &self.source {
            Source::Mapped(sealed) => Some(sealed.file()),
            Source::Copied(_) => None,
        }
    }
}
