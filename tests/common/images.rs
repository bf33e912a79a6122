//! A pool of one 32 MiB slot, and a tenant that checks its image then
//! scribbles over it: for the image and syscall-count tests.

use super::config::{self, GUARD};
use instance_pool::*;
use std::sync::Arc;

/// One instance, memory and table; a 32 MiB memory slot (room for a
/// 16 MiB image) with a 64 KiB guard, `keep_resident` bytes kept resident.
pub fn pool_of_one(keep_resident: usize) -> PoolingInstanceAllocator {
    let mut c = config::small(1);
    c.max_memory_size(32 << 20)
        .memory_guard_size(GUARD)
        .memory_keep_resident(keep_resident);
    config::pool(&c)
}

/// One memory of `min_pages` holding `image`.
pub fn image_layout(image: &Arc<MemoryImage>, min_pages: u64) -> InstanceLayout {
    InstanceLayout::new().memory_with_image(MemoryType::new(min_pages, None), image.clone())
}

/// Instantiates, checks the memory holds exactly `image` then zeroes, then
/// scribbles over all of it (grown by one page).
pub fn check_then_scribble(pool: &PoolingInstanceAllocator, layout: &InstanceLayout, image: &[u8]) {
    let mut s = Store::new(pool, ());
    let m = s.instantiate(layout).unwrap().memory(&s, 0).unwrap();
    let d = m.data(&s);
    assert_eq!(&d[..image.len()], image, "image bytes");
    assert!(
        d[image.len()..].iter().all(|&b| b == 0),
        "zeroes after the image"
    );
    m.grow(&mut s, 1).unwrap();
    m.data_mut(&mut s).fill(0xEE);
}
