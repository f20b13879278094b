//! The `ferrobeam` binary: see [`ferrobeam_cli::main_with_args`].
fn main() {
    std::process::exit(ferrobeam_cli::main_with_args(std::env::args().collect()));
}
