//! Relay stages between receive and forward.
pub mod policy;
