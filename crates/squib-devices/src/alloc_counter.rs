//! A counting global allocator, to prove hot paths do not touch the heap.
//!
//! [`CountingAlloc`] forwards to the system allocator and counts allocations (including
//! `realloc`, which goes through `alloc`) **per thread**: test binaries run their tests on
//! parallel threads, and a process-wide counter would see the neighbours' allocations. The
//! counter is a `const`-initialised `thread_local!` `Cell`, so counting never allocates and
//! registers no destructor.
//!
//! Only a test (or bench) binary installs it, with `#[global_allocator]`: squib-devices' own
//! unit tests do in `lib.rs`; other crates' benches and tests may under `test-utils`. The
//! library never installs an allocator for its users.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting this thread's allocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is a
// thread-local counter update, which neither allocates nor touches the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: an allocation during thread teardown is simply not counted.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed through as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap allocations made by this thread so far (only counted where [`CountingAlloc`] is
/// the global allocator; 0 elsewhere).
#[must_use]
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Run `f` and return its result with the number of heap allocations it made on this thread.
pub fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = thread_allocations();
    let out = f();
    (out, thread_allocations() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_threads_allocations_only() {
        let ((), n) = count_allocations(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(1));
        });
        assert_eq!(n, 1, "the installed CountingAlloc must see an allocation");
        // A first spawn may initialise process-wide state (stack size from the environment).
        std::thread::spawn(|| ()).join().unwrap();
        let ((), n) = count_allocations(|| {
            std::thread::spawn(|| std::hint::black_box(vec![0u8; 64]))
                .join()
                .unwrap();
        });
        // Spawning allocates here (thread handle, name); the child's Vec is not ours.
        let ((), n_spawn_only) = count_allocations(|| {
            std::thread::spawn(|| ()).join().unwrap();
        });
        assert_eq!(n, n_spawn_only);
    }
}
