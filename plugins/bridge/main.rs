//! The bridge plugin executable: the commands are `rcni::bridge` (in the library, so flannel can run them
//! in-process). See plugins/bridge/README.md.

#![cfg_attr(not(test), no_main)]

rcni::plugin_main!(run);

fn run() -> ! {
    // Keep the build marker in the binary: flannel looks for it to know this executable is ours.
    std::hint::black_box(rcni::bridge::BUILD_MARKER.as_ptr());
    rcni::cni::skel::run(&format!("CNI bridge plugin (rcni {})", env!("CARGO_PKG_VERSION")), &rcni::bridge::Bridge)
}
