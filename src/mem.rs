//! Process memory housekeeping: hands memory the allocator holds free back to the OS between
//! chunks, so a long run's peak RSS stays that of one chunk rather than growing with the
//! fragmentation of glibc's per-thread arenas.

/// Returns free heap memory to the OS (glibc `malloc_trim`); a no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator itself holds free; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
