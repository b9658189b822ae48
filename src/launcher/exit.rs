//! Exit statuses the way a shell reports them: the child's code, or 128 + signal number.

/// The shell convention for a child killed by `signal`.
pub fn code_for_signal(signal: i32) -> i32 {
    128 + signal
}

/// Maps a std exit status to the code we exit with.
pub fn code_from_std(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => code_for_signal(signal),
        (None, None) => 1,
    }
}

/// portable-pty reports a signal death only as `strsignal()` text; map it back to the number.
pub fn code_from_pty(status: &portable_pty::ExitStatus) -> i32 {
    match status.signal() {
        Some(name) => signal_number(name).map_or(1, code_for_signal),
        None => i32::try_from(status.exit_code()).unwrap_or(1),
    }
}

fn signal_number(name: &str) -> Option<i32> {
    (1..65).find(|&sig| {
        // SAFETY: strsignal returns a pointer to a static or thread-local string (or null).
        let text = unsafe { libc::strsignal(sig) };
        !text.is_null()
            // SAFETY: non-null pointer from strsignal is a valid C string.
            && unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy() == name
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_map_back_to_numbers() {
        let status = portable_pty::ExitStatus::with_signal("Terminated");
        assert_eq!(code_from_pty(&status), 128 + libc::SIGTERM);
        let status = portable_pty::ExitStatus::with_exit_code(3);
        assert_eq!(code_from_pty(&status), 3);
    }
}
