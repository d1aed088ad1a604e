//! A global allocator that keeps untrusted length fields from aborting the
//! process.
//!
//! The `kafka-protocol` decoder reserves a vector for an array's element
//! count before reading any element, so a 14-byte request claiming 2^31
//! topics asks for ~150 GB. The system allocator fails that, and a failed
//! allocation aborts the process: `catch_unwind` cannot help. This
//! allocator serves large blocks with `mmap(MAP_NORESERVE)`: address space
//! is reserved, memory is used only for the pages actually written, so the
//! decoder proceeds, runs out of input after a few elements, returns an
//! error, and the block is unmapped. Small blocks go to the system
//! allocator unchanged. (glibc's malloc also maps large blocks itself, but
//! without MAP_NORESERVE, so the kernel refuses obvious overcommits.)
//! Under `vm.overcommit_memory=2` the kernel ignores MAP_NORESERVE and the
//! old behaviour returns.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are mapped directly.
const LARGE_BLOCK_BYTES: usize = 64 * 1024 * 1024;

pub struct NoReserveLargeAlloc;

unsafe impl GlobalAlloc for NoReserveLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LARGE_BLOCK_BYTES || layout.align() > 4096 {
            return System.alloc(layout);
        }
        // SAFETY: an anonymous private mapping; page alignment satisfies any
        // alignment up to 4096, checked above.
        let p = libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LARGE_BLOCK_BYTES || layout.align() > 4096 {
            return System.dealloc(ptr, layout);
        }
        // SAFETY: `ptr` came from `alloc` above with the same size.
        libc::munmap(ptr as *mut libc::c_void, layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LARGE_BLOCK_BYTES || layout.align() > 4096 {
            return System.alloc_zeroed(layout);
        }
        // Fresh anonymous mappings are zero-filled.
        self.alloc(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let small_before = layout.size() < LARGE_BLOCK_BYTES || layout.align() > 4096;
        let small_after = new_size < LARGE_BLOCK_BYTES || layout.align() > 4096;
        if small_before && small_after {
            return System.realloc(ptr, layout, new_size);
        }
        // SAFETY: the new layout keeps the alignment of a valid layout.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new_ptr
    }
}
