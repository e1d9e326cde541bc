fn main() {
    // The image brings its own `_start`; no C runtime start files. rustc links no_std
    // binaries with `-nodefaultlibs`; the host C library supplies only memcpy, memmove,
    // memset and memcmp (compiler-builtins provides them on bare-metal targets instead).
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-lc");
}
