//! The one rule for finding a plugin binary on a search path (CNI_PATH for delegates, the runtime's plugin
//! dirs for cnitool): used by delegation (`super::delegate`) and by the runtime side (`super::runtime`).
//!
//! The name is a conflist `type`, i.e. a file name: empty, `.`, `..` or anything with a `/` is refused, so a
//! config can never make us run an arbitrary binary. The first executable regular file (symlinks followed)
//! of that name wins. libcni takes the first regular file even without an exec bit and then fails to run
//! it; skipping it finds a usable plugin in a later directory instead.

use super::error::{CniError, CniResult, code};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The full path of plugin `plugin_type` in `dirs`.
pub fn find_plugin(plugin_type: &str, dirs: &[PathBuf]) -> CniResult<PathBuf> {
    if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(CniError::invalid_config(format!("invalid plugin name {plugin_type:?}"))
            .with_details("a plugin type is a file name in CNI_PATH, without '/'"));
    }
    if dirs.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("cannot find plugin {plugin_type:?}: no paths provided (CNI_PATH is empty)"),
        )
        .with_details("set CNI_PATH to the directories holding the CNI plugins, e.g. /opt/cni/bin"));
    }
    for dir in dirs {
        let p = dir.join(plugin_type);
        if std::fs::metadata(&p).is_ok_and(|md| md.is_file() && md.permissions().mode() & 0o111 != 0) {
            return Ok(p);
        }
    }
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(CniError::internal(format!("failed to find plugin {plugin_type:?} in path [{}]", shown.join(" ")))
        .with_details("install the plugin there or fix CNI_PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(tempfile::TempDir);
    impl Dir {
        fn new(tag: &str) -> Dir {
            Dir(tempfile::TempDir::with_prefix(format!("rcni-unit-lookup-{tag}-")).unwrap())
        }
        fn path(&self) -> PathBuf {
            self.0.path().to_path_buf()
        }
        fn script(&self, name: &str) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, "#!/bin/sh\ntrue\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        }
    }

    #[test]
    fn first_regular_file_on_the_path_symlinks_followed() {
        let d = Dir::new("find");
        let other = Dir::new("find2");
        std::fs::create_dir(d.0.path().join("adir")).unwrap();
        let p = other.script("plug");
        std::os::unix::fs::symlink(&p, d.0.path().join("link")).unwrap();
        let paths = vec![d.path(), other.path()];
        assert_eq!(find_plugin("plug", &paths).unwrap(), p);
        assert_eq!(find_plugin("link", &paths).unwrap(), d.0.path().join("link"));
        let e = find_plugin("adir", &paths).unwrap_err();
        assert!(e.msg.contains("failed to find plugin \"adir\""), "{e}");
        assert!(find_plugin("../x", &paths).unwrap_err().msg.contains("invalid plugin name"));
        assert!(find_plugin("", &paths).is_err());
        assert!(find_plugin("plug", &[]).unwrap_err().msg.contains("no paths"));
    }

    #[test]
    fn finds_only_executable_files_and_refuses_paths() {
        let d = Dir::new("exec");
        std::fs::write(d.0.path().join("noexec"), "x").unwrap();
        std::fs::create_dir(d.0.path().join("adir")).unwrap();
        d.script("ipam");
        let dir = d.path();
        let dirs = std::slice::from_ref(&dir);
        assert_eq!(find_plugin("ipam", dirs).unwrap(), d.0.path().join("ipam"));
        assert!(find_plugin("noexec", dirs).is_err());
        assert!(find_plugin("adir", dirs).is_err());
        assert_eq!(find_plugin("../ipam", dirs).unwrap_err().code, 7);
        assert_eq!(find_plugin("ipam", &[]).unwrap_err().code, 4);
    }
}
