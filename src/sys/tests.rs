//! The kernel features this machine has, and what `written_pages` sees.

use super::*;

/// `(major, minor)` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn a_kernel_of_6_16_or_later_has_every_feature_the_pool_can_use() {
    // The development and CI machine runs 6.18. Older kernels take the
    // fallbacks, which the pool's tests force on this machine too.
    let f = features();
    if kernel_version() >= (6, 16) {
        assert!(
            f.guard_markers && f.anon_guard_markers && f.process_madvise && f.pagemap_scan,
            "{f:?}"
        );
    }
}

#[test]
fn written_pages_are_the_anonymous_pages_written_not_the_ones_read() {
    let page = page_size();
    let m = Mmap::read_write(8 * page).unwrap();
    let p = m.ptr().as_ptr();
    // SAFETY: our own read-write mapping of 8 pages.
    unsafe {
        p.add(page).write(1);
        p.add(5 * page + 9).write(1);
        p.add(6 * page).write(1);
        std::ptr::read_volatile(p.add(3 * page)); // the zero page: not written
    }
    let mut out = WrittenPages::default();
    written_pages(m.ptr(), 8 * page, &mut out).unwrap();
    assert_eq!(out.runs, [(page, page), (5 * page, 2 * page)]);
}

#[test]
fn pages_of_a_private_file_mapping_count_as_written_only_once_copied() {
    let page = page_size();
    let fd = sealed_memfd(0, &[7u8; 4096 * 4], 4 * page).unwrap();
    let slab = Mmap::reserve(4 * page).unwrap();
    // SAFETY: our own reservation, unreferenced.
    unsafe { map_file_private_fixed(slab.ptr(), 4 * page, fd.as_file()).unwrap() };
    let p = slab.ptr().as_ptr();
    // SAFETY: the private mapping is read-write.
    unsafe {
        assert_eq!(std::ptr::read_volatile(p), 7); // read: still the file's
        p.add(2 * page).write(0); // written: a private copy
    }
    let mut out = WrittenPages::default();
    written_pages(slab.ptr(), 4 * page, &mut out).unwrap();
    assert_eq!(out.runs, [(2 * page, page)]);
}

#[test]
fn guard_markers_install_and_remove_without_losing_the_range() {
    let page = page_size();
    let m = Mmap::read_write(4 * page).unwrap();
    // SAFETY: our own mapping; nothing references it.
    unsafe {
        m.ptr().as_ptr().add(page).write(5);
        guard_install(m.ptr().add(page), 2 * page).unwrap();
        guard_remove(m.ptr().add(page), 2 * page).unwrap();
        // Installing discarded the page: it reads as zero again.
        assert_eq!(std::ptr::read_volatile(m.ptr().as_ptr().add(page)), 0);
    }
}

#[test]
fn madvise_ranges_discards_every_range_with_or_without_process_madvise() {
    let page = page_size();
    for use_pm in [true, false] {
        let m = Mmap::read_write(6 * page).unwrap();
        let p = m.ptr().as_ptr();
        // SAFETY: our own mapping.
        unsafe {
            for i in 0..6 {
                p.add(i * page).write(1);
            }
            let ranges = [(m.ptr(), page), (m.ptr().add(3 * page), 2 * page)];
            madvise_ranges(&ranges, RangeAdvice::DontNeed, use_pm).unwrap();
            let left: Vec<u8> = (0..6)
                .map(|i| std::ptr::read_volatile(p.add(i * page)))
                .collect();
            assert_eq!(left, [0, 1, 1, 0, 0, 1], "process_madvise: {use_pm}");
        }
    }
}

#[test]
fn an_image_file_holds_its_nonzero_pages_only_and_reads_back_every_byte() {
    let page = page_size();
    // Zero, data, zero, zero, data, a short data page.
    let mut bytes = vec![0u8; 5 * page + 100];
    bytes[page + 3] = 1;
    bytes[4 * page + page - 1] = 2;
    bytes[5 * page + 99] = 3;
    assert_eq!(
        nonzero_runs(&bytes, page),
        [page..2 * page, 4 * page..5 * page + 100]
    );
    // Placed a page in: the zero pages and the page before are holes, the
    // file holds the 3 written pages only.
    let image = SealedImage::new(page, &bytes, 8 * page).unwrap();
    let stat = rustix::fs::fstat(image.file()).unwrap();
    assert_eq!(stat.st_blocks as usize * 512, 3 * page);
    let read = image.bytes();
    assert!(read[..page].iter().all(|&b| b == 0));
    assert_eq!(&read[page..page + bytes.len()], &bytes[..]);
    assert!(read[page + bytes.len()..].iter().all(|&b| b == 0));
}
