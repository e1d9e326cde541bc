//! End-to-end tests live in `tests/`; this library only hosts shared test fixtures.
pub mod faults;
