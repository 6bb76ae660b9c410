//! Allocator tuning for tensor workloads.
//!
//! A diffusion step allocates and frees hundreds of tensors of 10–300 MB.
//! mimalloc (weft's allocator) by default hands freed memory back to the
//! OS after a few milliseconds, so the next step's tensors fault in fresh
//! pages that the kernel must zero: a third of a 512² SD 1.5 UNet step
//! went to `clear_page` (see BENCHMARKS.md). Keeping freed memory for
//! reuse made the step 1.7× faster; the cost is that RSS stays at its peak.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS. Harmless when
/// mimalloc is not the global allocator.
pub fn keep_freed_memory() {
    // Safety: setting an option is a plain store in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}
