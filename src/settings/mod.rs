//! Layered settings; this branch only adds the policy sections.
pub mod policy;
