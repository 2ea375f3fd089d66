//! The bridge plugin executable: the commands are `rcni::bridge` (in the library, so flannel can run them
//! in-process). See plugins/bridge/README.md.

fn main() {
    rcni::cni::skel::run(&format!("CNI bridge plugin (rcni {})", env!("CARGO_PKG_VERSION")), &rcni::bridge::Bridge)
}
