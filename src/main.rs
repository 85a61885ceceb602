//! The `catalogsync` binary; the command line lives in [`catalogsync::cli`].

fn main() -> std::process::ExitCode {
    catalogsync::cli::main()
}
