//! Inspection of live process trees through /proc.

pub mod state;
