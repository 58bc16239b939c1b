//! The `facematch` binary: parses the command line and hands over to the library; errors print as a chain.

fn main() -> std::process::ExitCode {
    facematch::cli::main()
}
