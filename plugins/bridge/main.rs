//! The bridge plugin (being built).

mod config;

fn main() {
    eprintln!("bridge: not built yet");
    std::process::exit(1);
}
