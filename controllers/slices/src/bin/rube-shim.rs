//! `rube-shim shim --dir <slice dir>`: the shim as its own binary (the rubelet has the same as
//! `rubelet shim`).

fn main() -> std::process::ExitCode {
    slices::main_from_args(std::env::args_os().skip(1))
}
