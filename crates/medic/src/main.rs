//! `medic`: the command line.

mod cli;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when stdout was closed under us (`medic status | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // `println!` panics when the reader of a pipe goes away. For a command-line tool that is
    // the normal end of its output, as SIGPIPE is for C tools: stop quietly, status 141.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
            return;
        }
        default(info);
    }));
    match std::panic::catch_unwind(cli::main) {
        Ok(code) => code,
        Err(_) if STDOUT_CLOSED.load(Ordering::SeqCst) => ExitCode::from(141),
        Err(_) => ExitCode::from(101),
    }
}
