//! The `weir` binary; everything lives in the library.
fn main() -> std::process::ExitCode {
    weir::cli::main()
}
