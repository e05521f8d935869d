//! What the examples share: how a failure reaches the user.

use std::fmt::Display;
use std::process::ExitCode;

/// The exit status of an example whose work returned `result`: success, or
/// `<name>: error: <message>` on stderr and status 1.
pub fn exit_with<E: Display>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
