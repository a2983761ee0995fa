//! Links the hypervisor image with its own linker script when built for bare metal.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src/arch/x86_64/link.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bin=xen=-T{dir}/src/arch/x86_64/link.ld");
        println!("cargo:rustc-link-arg-bin=xen=-zmax-page-size=4096");
    }
}
