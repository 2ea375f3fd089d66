//! host-local IPAM plugin (drop-in for the reference `host-local`).

mod allocator;
mod config;
mod store;

fn main() {
    eprintln!("not built yet");
    std::process::exit(1);
}
