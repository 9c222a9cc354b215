//! The `cardinal` binary: everything lives in the library; this is the command-line edge.

mod cli;

/// mimalloc rather than glibc's malloc: under load a call allocates and frees thousands of small
/// objects (JSON values, Rhai strings and maps) across threads; measured with `cardinal bench`, see
/// the README's performance section.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
