//! A tenant never reads a byte another wrote, on every reset path: both
//! layouts and protections, with and without the dirty-page scan, keep-resident
//! smaller and larger than the image, images of odd sizes, pages the next
//! tenant never touched and pages only the previous one reached.

mod common;
use common::config::{self, ALL_SHAPES, MIB, Shape};
use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

/// The bytes a fresh memory of `len` bytes holding `image` reads as.
fn fresh(image: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..image.len()].copy_from_slice(image);
    v
}

fn image_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

#[test]
fn every_reset_path_hands_the_next_tenant_a_fresh_memory() {
    for shape in ALL_SHAPES {
        for dirty_page_scan in [true, false] {
            for image_len in [1, 4097, 70_000] {
                for keep in [0, 4096, 64 << 10, 256 << 10, MIB] {
                    let what = format!(
                        "{shape:?}, scan {dirty_page_scan}, image {image_len}, keep {keep}"
                    );
                    check(shape, dirty_page_scan, image_len, keep, &what);
                }
            }
        }
    }
}

fn check(shape: Shape, scan: bool, image_len: usize, keep: usize, what: &str) {
    let mut c = config::small(1);
    shape.apply(&mut c);
    c.dirty_page_scan(scan).memory_keep_resident(keep);
    let pool = config::pool(&c);
    let bytes = image_bytes(image_len);
    let image = MemoryImage::new(&bytes).unwrap();
    let min = image_len.div_ceil(PAGE) as u64;
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(min, None), image);
    for round in 0..3 {
        let mut s = Store::new(&pool, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        let size = m.data_size(&s);
        assert_eq!(
            m.data(&s),
            &fresh(&bytes, size)[..],
            "{what}, round {round}"
        );
        // Grow to 8 pages and check the grown part too, then dirty a
        // scattering of bytes: inside the image, on its last byte, just
        // past it, on page boundaries, past keep-resident, at the end.
        m.grow(&mut s, 8 - min).unwrap();
        let size = m.data_size(&s);
        assert_eq!(
            m.data(&s),
            &fresh(&bytes, size)[..],
            "{what}, round {round}, grown"
        );
        let data = m.data_mut(&mut s);
        for at in [
            0,
            image_len - 1,
            image_len,
            4095,
            4096,
            PAGE,
            keep.min(size - 1),
            size - 1,
        ] {
            data[at] ^= 0xFF;
        }
    }
}

#[test]
fn image_pages_nobody_wrote_are_not_written_back() {
    // With the scan, a reset writes back only what the tenant wrote: the
    // image's pages stay the file's (a copy would show up as resident
    // anonymous memory of the whole image on every release).
    let mut c = config::small(1);
    c.memory_keep_resident(MIB).max_memory_size(32 << 20);
    let pool = config::pool(&c);
    assert!(pool.metrics().dirty_page_scan);
    let bytes = image_bytes(MIB);
    let image = MemoryImage::new(&bytes).unwrap();
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(16, None), image);
    let mut base = 0;
    for _ in 0..3 {
        let mut s = Store::new(&pool, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        assert_eq!(&m.data(&s)[..MIB], &bytes[..]);
        m.data_mut(&mut s)[12345] = 0;
        base = m.data_ptr(&s) as usize;
    }
    let anon = anonymous_kib_at(base);
    assert!(
        anon <= 64,
        "{anon} KiB of the 1 MiB image mapping became private"
    );
}

/// `Anonymous:` of the mapping that starts at `addr` in `/proc/self/smaps`:
/// how much of it is private copies.
fn anonymous_kib_at(addr: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let range: Vec<_> = first.split('-').collect();
        if let [start, _end] = range[..]
            && let Ok(start) = usize::from_str_radix(start, 16)
        {
            inside = start == addr;
        } else if inside && let Some(kib) = line.strip_prefix("Anonymous:") {
            total += kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}
