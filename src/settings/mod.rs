//! Settings (TEMPORARY stub in the `stack` branch: the lead's layered settings module replaces
//! this file and keeps the `stack` submodule).
pub mod stack;
