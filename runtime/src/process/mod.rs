//! Inspection of live process trees through /proc.

pub mod inspect;
pub mod pidfd;
pub mod state;
