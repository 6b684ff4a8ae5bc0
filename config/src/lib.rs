//! Typed configuration (placeholder being written).
