//! Free lists of small blocks in front of a general allocator (the guest allocator's first
//! layer, [`crate::alloc`]).
//!
//! A policy allocates the same few small blocks on every call (strings lifted from the host,
//! header lists, formatted numbers) and frees them before the call returns. Served by a
//! general allocator, each of those is a search of its bins and, when freed, a merge with
//! its neighbours: profiled in the gateway, that was about a third of the demo policies'
//! own time. Here a block of at most [`MAX_SMALL`] bytes (alignment at most [`ALIGN`]) is
//! rounded up to a multiple of [`ALIGN`]; freeing it pushes it on the free list of its
//! size, and the next allocation of that size pops it, in a few instructions. Blocks on a
//! free list are never handed back to the general allocator: the memory a policy keeps is
//! its peak use of each size, which for a policy is small and steady.

#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Size granularity and alignment of small blocks.
pub(crate) const ALIGN: usize = 16;
/// Largest size served from the free lists.
pub(crate) const MAX_SMALL: usize = 256;
const CLASSES: usize = MAX_SMALL / ALIGN;

/// The free lists (one per multiple of [`ALIGN`] up to [`MAX_SMALL`]) in front of `A`.
/// Not thread-safe: a component instance runs on one thread.
pub(crate) struct SizeClasses<A> {
    inner: A,
    /// Head of each class's list; a free block holds the address of the next one.
    heads: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: only a `wasm32` guest without the `atomics` feature shares the allocator (as its
// `#[global_allocator]`), and such a guest has exactly one thread.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    /// Free lists in front of `inner`, all empty.
    pub(crate) const fn new(inner: A) -> Self {
        Self {
            inner,
            heads: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

/// The class of a layout served from the free lists, if it is small enough.
fn class(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= ALIGN)
        .then(|| layout.size().max(1).div_ceil(ALIGN) - 1)
}

/// The layout the blocks of class `c` are allocated with from the inner allocator.
fn class_layout(c: usize) -> Layout {
    // SAFETY: `(c + 1) * ALIGN` is at most `MAX_SMALL`, a small multiple of the
    // power-of-two alignment `ALIGN`.
    unsafe { Layout::from_size_align_unchecked((c + 1) * ALIGN, ALIGN) }
}

// SAFETY: a block handed out for a class has that class's size and `ALIGN` alignment,
// enough for the caller's layout (which maps to the same class when it is freed, as
// `GlobalAlloc` requires the same layout); a block on a free list belongs to nobody else
// until it is popped. Other layouts go to the inner allocator untouched.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no other borrow of the heads is alive.
        let heads = unsafe { &mut *self.heads.get() };
        let block = heads[c];
        if block.is_null() {
            // SAFETY: a valid, non-zero-sized layout.
            return unsafe { self.inner.alloc(class_layout(c)) };
        }
        // SAFETY: a free block of this class holds the next free block's address.
        heads[c] = unsafe { block.cast::<*mut u8>().read() };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.inner.dealloc(block, layout) };
        };
        // SAFETY: one thread; `block` is a block of class `c` that the caller gives up,
        // `ALIGN`-aligned and larger than a pointer.
        unsafe {
            let heads = &mut *self.heads.get();
            block.cast::<*mut u8>().write(heads[c]);
            heads[c] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`,
        // does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            (Some(a), Some(b)) if a == b => block,
            // SAFETY: the caller's contract, passed on.
            (None, None) => unsafe { self.inner.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: `new_layout` is valid (above); the old block is live with
                // `layout`, and only the bytes both blocks hold are copied.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_sizes_round_up_to_classes_and_large_or_overaligned_ones_bypass_them() {
        assert_eq!(class(layout(0, 1)), Some(0));
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(MAX_SMALL, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn a_freed_small_block_is_reused_for_the_next_allocation_of_its_class() {
        let a = SizeClasses::new(System);
        unsafe {
            let x = a.alloc(layout(20, 4));
            let y = a.alloc(layout(30, 8));
            assert_ne!(x, y);
            assert_eq!(x as usize % ALIGN, 0);
            a.dealloc(x, layout(20, 4));
            a.dealloc(y, layout(30, 8));
            // Last in, first out, across sizes of the same class (17..=32 bytes).
            assert_eq!(a.alloc(layout(32, 1)), y);
            assert_eq!(a.alloc(layout(17, 1)), x);
            // Another class has its own list.
            let z = a.alloc(layout(40, 1));
            assert!(z != x && z != y);
            for (p, n) in [(x, 17), (y, 32), (z, 40)] {
                a.dealloc(p, layout(n, 1));
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_within_and_across_classes() {
        let a = SizeClasses::new(System);
        unsafe {
            let p = a.alloc(layout(10, 1));
            for i in 0..10 {
                p.add(i).write(i as u8);
            }
            // Same class: the same block.
            assert_eq!(a.realloc(p, layout(10, 1), 16), p);
            // A bigger class, then beyond the small sizes, then back: contents kept.
            let q = a.realloc(p, layout(16, 1), 100);
            let r = a.realloc(q, layout(100, 1), 4000);
            let s = a.realloc(r, layout(4000, 1), 12);
            for i in 0..10 {
                assert_eq!(s.add(i).read(), i as u8);
            }
            // The block the first move left behind was free for its class again.
            assert_eq!(s, p);
            a.dealloc(s, layout(12, 1));
        }
    }
}
