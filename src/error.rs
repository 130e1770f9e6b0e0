//! What a run's failure means to the shell: [`InputError`], the error a user can fix
//! (bad input, bad arguments), its constructors [`input_error!`] and [`bail_input!`],
//! and [`ExitStatus`], the process's exit codes. Below every other module.

use std::process::ExitCode;

/// An error caused by the input or the invocation, not by a bug: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// An [`InputError`] whose message is built like `format!`'s.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => {
        $crate::error::InputError(format!($($arg)*))
    };
}

/// Returns early with an [`InputError`] whose message is built like `format!`'s.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::input_error!($($arg)*).into())
    };
}

/// How a command ended, as the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Success,
    /// 1: the input or the invocation was wrong (an [`InputError`] or another error the
    /// user can fix).
    InputError,
    /// 2: anything else: a bug, or the machine (disk, memory).
    Internal,
    /// 3: `run --check` found changes to propose.
    Changes,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::InputError => 1,
            ExitStatus::Internal => 2,
            ExitStatus::Changes => 3,
        })
    }
}

/// Whether an error's chain holds a broken pipe (stdout closed by `| head`): not a
/// failure of the command.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
