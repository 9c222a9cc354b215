//! The `cardinal` binary: everything lives in the library; this is the command-line edge.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
