//! The guest's allocator (wasm32 only; opt out with `default-features = false` to bring your
//! own): [talc] over the unused tail of the module's *initial* linear memory first, and over
//! pages grown with `memory.grow` only once that is full; small blocks are recycled through
//! per-size free lists in front of it ([`crate::size_classes`]).
//!
//! Why: Rust's default wasm allocator grows memory on its first allocation, even when the
//! initial memory has room. For the host, every growth of a fresh instance is an `mprotect`
//! (and shrinking the slot back for the next instance is another, with a TLB shootdown), which
//! made up about half of the cost of an `isolated` policy instance. The plugins in this
//! repository link with `--initial-heap` (see `plugins/.cargo/config.toml`), so a request's
//! allocations fit in the initial memory and an instance never grows.

#![allow(unsafe_code)]

use core::alloc::Layout;
use core::arch::wasm32::{memory_grow, memory_size};
use core::ptr::NonNull;

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::wasm::WasmBinning;

use crate::size_classes::SizeClasses;

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// First byte after the stack and static data (defined by the linker).
    static __heap_base: u8;
}

/// A talc source: the initial memory's tail, then `memory.grow`n pages.
#[derive(Debug)]
pub(crate) struct InitialThenGrow {
    /// End of the heap talc manages (`None` before the first acquisition).
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` uses no allocator; it only claims or extends memory that belongs to
// nobody else: the initial memory above `__heap_base` (nothing else in the module writes
// there) and pages this source grew itself.
unsafe impl talc::source::Source for InitialThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let Some(old_end) = talc.source.end else {
            let base = (&raw const __heap_base).cast_mut();
            let top = memory_size::<0>() * PAGE;
            let size = top.saturating_sub(base as usize);
            // SAFETY: `base..top` is in bounds of the linear memory and unused (see above).
            talc.source.end = unsafe { talc.claim(base, size) };
            if talc.source.end.is_some() {
                return Ok(());
            }
            return grow(talc, layout, None);
        };
        grow(talc, layout, Some(old_end))
    }
}

/// Grows the memory by enough pages for `layout` (generously counting talc's per-chunk
/// overhead and alignment) and extends the heap when the new pages follow it.
fn grow<B: Binning>(
    talc: &mut Talc<InitialThenGrow, B>,
    layout: Layout,
    old_end: Option<NonNull<u8>>,
) -> Result<(), ()> {
    let pages = (layout.size() + layout.align() + 256).div_ceil(PAGE);
    let prev = memory_grow::<0>(pages);
    if prev == usize::MAX {
        return Err(());
    }
    let base = (prev * PAGE) as *mut u8;
    let size = pages * PAGE;
    talc.source.end = match old_end {
        // SAFETY: the grown pages follow the heap directly and belong to this source.
        Some(end) if end.as_ptr() == base => Some(unsafe { talc.extend(end, base.add(size)) }),
        // SAFETY: fresh pages from `memory.grow`, owned by nobody else.
        _ => unsafe { talc.claim(base, size) },
    };
    talc.source.end.map(|_| ()).ok_or(())
}

/// The global allocator of an SDK-built policy: free lists of small blocks
/// ([`crate::size_classes`]) in front of talc.
#[global_allocator]
static ALLOCATOR: SizeClasses<TalcSyncCell<InitialThenGrow, WasmBinning>> =
    SizeClasses::new(TalcSyncCell::new_wasm(InitialThenGrow { end: None }));
