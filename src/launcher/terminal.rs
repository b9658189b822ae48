//! The outer terminal: raw mode while claude runs, restored on every path (normal exit, error,
//! panic, forwarded signal), and its window size.

use std::os::fd::RawFd;
use std::sync::Mutex;

static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

/// Puts `fd` in raw mode until dropped. A panic hook restores it too.
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Enters raw mode on `fd` (the launcher's stdin).
    pub fn enter(fd: RawFd) -> std::io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = original;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut raw) };
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some((fd, original));
        }
        install_panic_restore();
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the saved terminal mode, if any. Safe to call more than once.
pub fn restore() {
    if let Ok(mut saved) = SAVED.lock()
        && let Some((fd, original)) = saved.take()
    {
        // SAFETY: fd was valid when saved; a failure here leaves nothing better to do.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    }
}

fn install_panic_restore() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty accepts any fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// The window size of the terminal on `fd`, or 24x80 when it has none.
pub fn window_size(fd: RawFd) -> portable_pty::PtySize {
    // SAFETY: winsize is plain data; ioctl fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; a failure leaves zeros, handled below.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    if !ok || ws.ws_row == 0 || ws.ws_col == 0 {
        return portable_pty::PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        };
    }
    portable_pty::PtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
        pixel_width: ws.ws_xpixel,
        pixel_height: ws.ws_ypixel,
    }
}
