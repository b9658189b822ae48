//! Management commands that are not the run itself: each reads settings, does one job, and
//! returns an exit code.

pub mod config;
pub mod doctor;
pub mod import;
pub mod settings_text;
pub mod setup_statusline;
