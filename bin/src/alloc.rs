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
