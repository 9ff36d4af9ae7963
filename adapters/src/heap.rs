//! Heap counters, fed by a counting global allocator in the binary (which
//! owns the `unsafe` part); read for `/v1/status` and `/v1/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_OBJECTS: AtomicU64 = AtomicU64::new(0);

/// Records an allocation of `size` bytes.
#[inline]
pub fn on_alloc(size: usize) {
    LIVE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    LIVE_OBJECTS.fetch_add(1, Ordering::Relaxed);
}

/// Records a deallocation of `size` bytes.
#[inline]
pub fn on_dealloc(size: usize) {
    LIVE_BYTES.fetch_sub(size as u64, Ordering::Relaxed);
    LIVE_OBJECTS.fetch_sub(1, Ordering::Relaxed);
}

/// Records a reallocation from `old` to `new` bytes.
#[inline]
pub fn on_realloc(old: usize, new: usize) {
    LIVE_BYTES.fetch_add(new as u64, Ordering::Relaxed);
    LIVE_BYTES.fetch_sub(old as u64, Ordering::Relaxed);
}

/// (live bytes, live allocations); zeros when no counting allocator is installed.
pub fn live() -> (u64, u64) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_OBJECTS.load(Ordering::Relaxed))
}
