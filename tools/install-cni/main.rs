//! `rcni-install-cni`: the install-cni role of rcni's container image (what flannel's init containers do
//! with `cp`). It copies every plugin of the image into the node's CNI bin directory and, when asked, a
//! conflist into the node's CNI config directory, then exits; the DaemonSet runs it as an init container.
//!
//! ```text
//! rcni-install-cni [--bin-src DIR] [--bin-dest DIR] [--conf-src FILE --conf-dest FILE]
//! ```
//! Defaults: `--bin-src /opt/cni/bin` (inside the image), `--bin-dest /host/opt/cni/bin` (the node's,
//! mounted). Each file goes through a temporary name and a rename in the destination directory, so a runtime
//! exec'ing a plugin meanwhile sees the old or the new binary, never a half-written one. Files that are
//! already identical are left alone, so restarts of the pod do not touch the node.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug)]
struct Options {
    bin_src: PathBuf,
    bin_dest: PathBuf,
    conf: Option<(PathBuf, PathBuf)>,
}

const USAGE: &str = "usage: rcni-install-cni [--bin-src DIR] [--bin-dest DIR] [--conf-src FILE --conf-dest FILE]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { bin_src: "/opt/cni/bin".into(), bin_dest: "/host/opt/cni/bin".into(), conf: None };
    let (mut conf_src, mut conf_dest) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--bin-src" => o.bin_src = value()?.into(),
            "--bin-dest" => o.bin_dest = value()?.into(),
            "--conf-src" => conf_src = Some(PathBuf::from(value()?)),
            "--conf-dest" => conf_dest = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    o.conf = match (conf_src, conf_dest) {
        (Some(s), Some(d)) => Some((s, d)),
        (None, None) => None,
        _ => return Err(format!("--conf-src and --conf-dest go together\n{USAGE}")),
    };
    Ok(o)
}

/// Copies `src` to `dest` with `mode` unless `dest` already has the same bytes; true if it wrote.
fn install(src: &Path, dest: &Path, mode: u32) -> Result<bool, String> {
    let bytes = fs::read(src).map_err(|e| format!("read {}: {e}", src.display()))?;
    if fs::read(dest).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let dir = dest.parent().ok_or_else(|| format!("{} has no directory", dest.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.rcni-new"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("install {}: {e}", dest.display())
    })?;
    Ok(true)
}

fn run(o: &Options) -> Result<(), String> {
    let entries = fs::read_dir(&o.bin_src).map_err(|e| format!("read {}: {e}", o.bin_src.display()))?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let src = o.bin_src.join(&name);
        if !src.is_file() {
            continue;
        }
        let dest = o.bin_dest.join(&name);
        if install(&src, &dest, 0o755)? {
            eprintln!("installed {}", dest.display());
        }
    }
    if let Some((src, dest)) = &o.conf {
        if install(src, dest, 0o644)? {
            eprintln!("installed {}", dest.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcni-install-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_flags_go_together() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse(&args(&["--conf-src", "a"])).is_err());
        assert!(parse(&args(&["--bin-dest"])).unwrap_err().contains("needs a value"));
        let o = parse(&args(&["--conf-src", "a", "--conf-dest", "b"])).unwrap();
        assert_eq!(o.conf, Some(("a".into(), "b".into())));
        assert_eq!(o.bin_dest, PathBuf::from("/host/opt/cni/bin"));
    }
}
