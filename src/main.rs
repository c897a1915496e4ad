//! The xdr-ingest binary: the CLI, and `serve` for the Azure Functions host.

// The shipped binary is static (musl), whose own allocator is slow for this allocation-heavy
// work: jemalloc there, with two arenas (measured: within 10 % of the glibc build's CPU time
// and below its peak memory; the default, one arena per CPU times four, used more of both).
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (`malloc_conf`, read once at start-up).
#[cfg(target_env = "musl")]
#[repr(transparent)]
pub struct MallocConf(*const u8);
// SAFETY: a pointer to a static, immutable, NUL-terminated string.
#[cfg(target_env = "musl")]
unsafe impl Sync for MallocConf {}
#[cfg(target_env = "musl")]
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: MallocConf = MallocConf(c"narenas:2".as_ptr().cast());

fn main() -> std::process::ExitCode {
    xdr_ingest::cli::main()
}
