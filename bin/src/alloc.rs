//! A counting global allocator: the system allocator plus two relaxed atomic
//! counters, so `/v1/status` and `/v1/metrics` report real heap figures.

#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; each method only forwards.

use std::alloc::{GlobalAlloc, Layout, System};

use kes_adapters::heap;

pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates counters afterwards.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            heap::on_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            heap::on_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        heap::on_dealloc(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            heap::on_realloc(layout.size(), new_size);
        }
        p
    }
}

/// Watches the live heap once a second and trims after it shrinks a lot, so
/// that RSS falls back after a connection flood instead of staying at its
/// peak.
pub fn spawn_trimmer() {
    let _ = std::thread::Builder::new().name("kes-trim".into()).spawn(|| {
        let mut policy = TrimPolicy::default();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if policy.observe(heap::live().0) {
                release_free_memory();
            }
        }
    });
}

/// Hands free heap pages back to the operating system. glibc keeps memory
/// freed in the middle of its arenas (after a connection flood, the buffers
/// of thousands of closed connections) mapped until told; `malloc_trim`
/// releases every whole free page. Elsewhere this does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers, only walks glibc's own free
        // lists under its arena locks, and may be called from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// When to give memory back: after the live heap has shrunk by
/// [`TrimPolicy::SHRINK`] from its highest point since the last trim.
/// Driven by readings handed in, so it is tested without a clock.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    peak: u64,
}

impl TrimPolicy {
    /// Worth a trim: about 500 connections' buffers.
    pub const SHRINK: u64 = 8 << 20;

    /// Takes a reading of live heap bytes; true when it is time to trim.
    pub fn observe(&mut self, live: u64) -> bool {
        self.peak = self.peak.max(live);
        if self.peak - live >= Self::SHRINK {
            self.peak = live;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::TrimPolicy;

    #[test]
    fn trims_once_after_the_heap_shrinks() {
        let mut p = TrimPolicy::default();
        let mb = 1 << 20;
        assert!(!p.observe(4 * mb));
        assert!(!p.observe(100 * mb), "growing is no reason");
        assert!(!p.observe(95 * mb), "a small dip is no reason");
        assert!(p.observe(10 * mb), "a flood is gone");
        assert!(!p.observe(10 * mb), "once, not every tick");
        assert!(!p.observe(12 * mb));
        assert!(p.observe(2 * mb));
    }
}
