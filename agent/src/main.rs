//! rcni-overlay: a flanneld-compatible node agent (etcd subnet leases, VXLAN peers). See agent/README.md.

mod agent;
mod flags;
mod health;
mod kernel;
mod netconf;
mod registry;
mod status;

use flags::{Flags, Mode};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let f = match Flags::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let result = match f.mode {
        Mode::Run => rt.block_on(agent::run(f)),
        Mode::Leave => rt.block_on(agent::leave(f)),
        Mode::Status => status(&f),
    };
    if let Err(e) = result {
        eprintln!("rcni-overlay: {e}");
        std::process::exit(1);
    }
}

/// `status`: what the running agent last wrote.
fn status(f: &Flags) -> Result<(), String> {
    let path = f.state_dir.join("status.json");
    let bytes = rcni::fs_private::read_private(&path, 16 << 20).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("{} is missing: is rcni-overlay running with --state-dir {}?", path.display(), f.state_dir.display())
    })?;
    println!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}
