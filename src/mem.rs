//! Process memory housekeeping: hands memory the allocator holds free back to the OS between
//! chunks, so a long run's peak RSS stays that of one chunk rather than growing with what the
//! allocator keeps for reuse (glibc's per-thread arenas; jemalloc's dirty pages, in the shipped
//! static build).

/// Returns free heap memory to the OS: glibc `malloc_trim`, or a purge of every jemalloc
/// arena's dirty pages in the static (musl) build.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator itself holds free; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_env = "musl")]
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL>.purge` takes no input or output; the name is a
    // NUL-terminated static string. It only returns pages jemalloc holds unused.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
