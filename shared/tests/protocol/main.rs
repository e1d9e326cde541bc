//! Protocol tests of `tether-shared`: round trips of every message kind, the size proof at
//! run time, corrupted, truncated, oversized and foreign frames, garbage on the line, and the
//! worked examples of `docs/PROTOCOL.md`.

mod bad_input;
mod bit_flip;
mod examples;
mod roundtrip;
mod sizes;
mod strategies;
