//! The `herald` binary.

/// mimalloc rather than the system allocator: every event and delivery allocates (records,
/// rendered bodies, HTTP buffers), and with glibc's malloc that was a fifth of the CPU time
/// under load (`herald bench`, `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    herald::cli::main()
}
