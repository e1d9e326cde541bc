//! Rebuilds when the memory map changes. cortex-m-rt's `link.x` includes `memory.x`, which
//! the linker finds in this package's root (the linker runs there).
fn main() {
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
