//! The `allcnnc` binary: see [`allcnnc::cli`].

fn main() -> std::process::ExitCode {
    allcnnc::cli::main()
}
