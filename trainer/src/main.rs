//! The `tether` command line.
fn main() {
    println!("tether {}", env!("CARGO_PKG_VERSION"));
}
