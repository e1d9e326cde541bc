//! Simulated board (placeholder being written).
