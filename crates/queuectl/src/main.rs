//! `queuectl`: see `queuectl --help`.

fn main() -> std::process::ExitCode {
    queuectl::main_entry()
}
