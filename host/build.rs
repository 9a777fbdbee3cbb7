//! Link settings of the `sluice` binary.
//!
//! On Linux with glibc ≥ 2.36 the binary is linked with packed relative relocations
//! (`DT_RELR`, `-z pack-relative-relocs`): a position-independent executable keeps its
//! address-space layout randomisation, but its ~50 000 relative relocations take a few
//! kilobytes instead of 1.2 MB that the dynamic loader reads (and keeps resident) at every
//! start. Older glibc cannot load such a binary, so it is only done when the glibc of the
//! build machine (which is the one `cargo run` uses) supports it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu && var("HOST") == var("TARGET") && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build machine's glibc (`getconf GNU_LIBC_VERSION`, e.g. `glibc 2.36`) is at
/// least `major.minor`; false when it cannot be told.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
