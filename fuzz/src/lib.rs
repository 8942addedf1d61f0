//! Helpers shared by the fuzz targets.
//!
//! The targets are built without a sanitizer (`--sanitizer none`: the whole
//! stack under ASan doubles the build and edgeplan has no `unsafe`), and
//! without one libFuzzer cannot see single allocations, so its
//! `-malloc_limit_mb` does nothing. [`LimitedAlloc`] restores that check: an
//! allocation of [`MALLOC_LIMIT`] bytes or more reports itself the way
//! libFuzzer would and aborts, which libFuzzer records as a crash with the
//! input that caused it. Memory that really grows is still caught by
//! `-rss_limit_mb`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Largest single allocation allowed: libFuzzer's `-malloc_limit_mb=2048`.
pub const MALLOC_LIMIT: usize = 2048 << 20;

pub struct LimitedAlloc;

impl LimitedAlloc {
    #[cold]
    fn too_big(size: usize) -> ! {
        // No allocation here: format into a stack buffer.
        let mut buf = [0u8; 128];
        let msg = b"==edgeplan-fuzz== ERROR: libFuzzer: out-of-memory (malloc(";
        let mut n = 0;
        for &b in msg {
            buf[n] = b;
            n += 1;
        }
        let mut digits = [0u8; 20];
        let (mut v, mut d) = (size, 0);
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while d > 0 {
            d -= 1;
            buf[n] = digits[d];
            n += 1;
        }
        for &b in b"))\n" {
            buf[n] = b;
            n += 1;
        }
        extern "C" {
            fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        }
        // SAFETY: writes `n` initialised bytes of `buf` to stderr.
        unsafe {
            write(2, buf.as_ptr(), n);
        }
        std::process::abort()
    }
}

// SAFETY: forwards to the system allocator; only refuses (aborts on) sizes
// at or above the limit.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MALLOC_LIMIT {
            Self::too_big(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MALLOC_LIMIT {
            Self::too_big(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= MALLOC_LIMIT {
            Self::too_big(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

/// The base instance the `scenario` target applies scenarios to: the
/// three-city fleet of `examples/three-cities.yaml` (the base of
/// `examples/what-if.yaml`, so the seeds' site and link names exist).
pub const BASE_INSTANCE_YAML: &str = include_str!("../base-instance.yaml");
