//! Everything about the real `claude`: where it is, what an invocation does (learned from the
//! installed binary), which releases are tested, and what it must be told so that its telemetry
//! reaches our relay.

pub mod compat;
mod discover;
pub mod grammar;
mod invocation;
mod telemetry_env;

pub use discover::{NotFound, find_claude};
pub use invocation::{Invocation, classify};
pub use telemetry_env::{
    InjectError, TelemetryTarget, child_env, inject_env, inject_settings, withheld_variables,
};
