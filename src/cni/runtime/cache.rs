//! libcni's result cache: `<cacheDir>/results/<network>-<containerID>-<ifname>`.
//!
//! File format (JSON, same keys and order as libcni, so either runtime can read the other's cache):
//! `{"kind":"cniCacheV1","containerId":..,"config":"<base64 of the conflist bytes>","ifName":..,
//! "networkName":..,"netns":..,"cniArgs":[["K","V"],..],"capabilityArgs":{..},"result":{..}}`
//! (`netns`, `cniArgs`, `capabilityArgs`, `result` omitted when empty). Files written by old libcni
//! versions hold just a result; [`read_result`] still reads them.
//!
//! The directories are created with mode 0700, the file with 0600. Unlike libcni the file is written
//! to a temporary name and renamed into place, so a crash never leaves a half-written cache.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::error::{CniError, CniResult, code};

/// `kind` of the current cache format.
pub const CACHE_KIND: &str = "cniCacheV1";

/// libcni's default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One cache file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CachedInfo {
    #[serde(default)]
    pub kind: String,
    #[serde(rename = "containerId", default)]
    pub container_id: String,
    /// The conflist bytes the attachment was added with.
    #[serde(with = "base64_bytes", default)]
    pub config: Vec<u8>,
    #[serde(rename = "ifName", default)]
    pub ifname: String,
    #[serde(rename = "networkName", default)]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub capability_args: Map<String, Value>,
    /// The final ADD result, as the last plugin printed it (in its own cniVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Path of the cache file of one attachment. All three parts are required (libcni's rule).
pub fn cache_file_path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> CniResult<PathBuf> {
    if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
        return Err(CniError::internal(format!(
            "cache file path requires network name ({network:?}), container ID ({container_id:?}), and interface name ({ifname:?})"
        )));
    }
    Ok(cache_dir.join("results").join(format!("{network}-{container_id}-{ifname}")))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what} {}: {e}", path.display()))
}

/// Writes (replaces) the cache file for `info.network_name`/`container_id`/`ifname`.
pub fn write(cache_dir: &Path, info: &CachedInfo) -> CniResult<PathBuf> {
    let path = cache_file_path(cache_dir, &info.network_name, &info.container_id, &info.ifname)?;
    let dir = path.parent().expect("cache path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("cannot create cache directory", dir, e))?;
    let bytes = serde_json::to_vec(info).expect("serializing JSON cannot fail");
    crate::fs_private::write_atomic(&path, &bytes, true).map_err(|e| io_err("cannot write cache file", &path, e))?;
    Ok(path)
}

/// How old a temporary cache file must be before [`remove_stale_temps`] deletes it even when a process
/// with the pid in its name runs: a writer holds its temp file for one write and sync, so anything older
/// was left by a writer that died (and the pid was reused).
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// The writer's pid in a temp file name `.<name>.tmp-<pid>[-<n>]`.
fn temp_writer_pid(file_name: &str) -> Option<i32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    tail.split('-').next()?.parse().ok()
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists; EPERM means it exists and is someone else's.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Remove the temporary files writers that crashed between create and rename left in `<cache>/results`:
/// those whose writer is gone, or older than [`STALE_TEMP_AGE`]. Returns how many were removed. GC calls it.
pub fn remove_stale_temps(cache_dir: &Path) -> usize {
    let dir = cache_dir.join("results");
    let Ok(rd) = std::fs::read_dir(&dir) else { return 0 };
    let mut removed = 0;
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_writer_pid(&name) else { continue };
        let Ok(md) = entry.metadata() else { continue };
        let old = md.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > STALE_TEMP_AGE);
        if md.is_file() && (old || !process_exists(pid)) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Reads a cache file in the current format. `Ok(None)` if it does not exist (or cannot be read —
/// libcni treats read errors as "no cache").
pub fn read_info(path: &Path) -> CniResult<Option<CachedInfo>> {
    let Ok(bytes) = super::conflist::read_file(path) else {
        return Ok(None);
    };
    let info: CachedInfo = serde_json::from_slice(&bytes)
        .map_err(|e| CniError::new(code::DECODE, format!("failed to unmarshal cache file {}: {e}", path.display())))?;
    if info.kind != CACHE_KIND {
        return Err(CniError::new(
            code::DECODE,
            format!("cache file {} has wrong kind: {:?}", path.display(), info.kind),
        ));
    }
    Ok(Some(info))
}

/// The cached result JSON of an attachment: the `result` of a `cniCacheV1` file, or the whole file
/// for an old result-only cache. `Ok(None)` when there is no cache file or it holds no result.
pub fn read_result(path: &Path) -> CniResult<Option<Value>> {
    let Ok(bytes) = super::conflist::read_file(path) else {
        return Ok(None);
    };
    if let Ok(info) = serde_json::from_slice::<CachedInfo>(&bytes) {
        if info.kind == CACHE_KIND {
            return Ok(info.result);
        }
    }
    // Old format: the file is the result itself.
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CniError::new(code::DECODE, format!("failed to parse cached result {}: {e}", path.display())))?;
    if !v.is_object() {
        return Err(CniError::new(code::DECODE, format!("cached result {} is not a JSON object", path.display())));
    }
    Ok(Some(v))
}

/// Removes a cache file; a missing file is not an error.
pub fn remove(path: &Path) -> CniResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove cache file", path, e)),
    }
}

/// All `cniCacheV1` attachments in the cache (file name order), optionally only those of one
/// container. Unreadable or foreign files, and entries without network or ifname, are skipped (like
/// libcni). A missing cache directory gives an empty list.
pub fn list_attachments(cache_dir: &Path, container_id: Option<&str>) -> CniResult<Vec<CachedInfo>> {
    let dir = cache_dir.join("results");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot read cache directory", &dir, e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let container_id = container_id.filter(|c| !c.is_empty());
    let mut out = Vec::new();
    for name in names {
        if let Some(cid) = container_id {
            let part = format!("-{cid}-");
            match name.find(&part) {
                Some(pos) if pos > 0 && pos + part.len() < name.len() => {}
                _ => continue,
            }
        }
        let Ok(Some(info)) = read_info(&dir.join(&name)) else {
            continue;
        };
        if container_id.is_some_and(|cid| info.container_id != cid) {
            continue;
        }
        if info.ifname.is_empty() || info.network_name.is_empty() {
            continue;
        }
        out.push(info);
    }
    Ok(out)
}

/// Standard base64 with padding (what Go's encoding/json uses for `[]byte`).
pub mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Decodes standard base64; padding optional, ASCII whitespace ignored.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        let mut padding = false;
        for (i, c) in s.bytes().enumerate() {
            if c.is_ascii_whitespace() {
                continue;
            }
            if c == b'=' {
                padding = true;
                continue;
            }
            if padding {
                return Err(format!("illegal base64 data at input byte {i}"));
            }
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(format!("illegal base64 data at input byte {i}")),
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        if bits >= 6 {
            return Err("truncated base64 data".into());
        }
        Ok(out)
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(s) => decode(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(tag: &str) -> tempfile::TempDir {
        tempfile::TempDir::with_prefix(format!("rcni-unit-cache-{tag}-")).unwrap()
    }

    #[test]
    fn temps_of_dead_or_old_writers_are_removed() {
        let t = tmp("temps");
        let d = t.path();
        let info = CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            network_name: "n".into(),
            ..Default::default()
        };
        let kept = write(d, &info).unwrap();
        let results = d.join("results");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let crashed = results.join(format!(".n-c-eth0.tmp-{dead}"));
        std::fs::write(&crashed, "{").unwrap();
        let live = results.join(format!(".n-c-eth1.tmp-{}-0", std::process::id()));
        std::fs::write(&live, "{").unwrap();
        let ancient = results.join(format!(".n-c-eth2.tmp-{}-1", std::process::id()));
        let f = std::fs::File::create(&ancient).unwrap();
        f.set_modified(std::time::SystemTime::now() - 2 * STALE_TEMP_AGE).unwrap();
        assert_eq!(remove_stale_temps(d), 2);
        assert!(!crashed.exists() && !ancient.exists());
        assert!(live.exists(), "a temp file a live writer is writing must stay");
        assert!(kept.exists());
    }

    #[test]
    fn base64_round_trip() {
        use base64_bytes::{decode, encode};
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode("Zm9vYg").unwrap(), b"foob");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert!(decode("Zm9v!").is_err());
        assert!(decode("Z").is_err());
    }

    #[test]
    fn path_requires_all_parts() {
        let d = Path::new("/var/lib/cni");
        assert_eq!(cache_file_path(d, "net", "cid", "eth0").unwrap(), Path::new("/var/lib/cni/results/net-cid-eth0"));
        assert!(cache_file_path(d, "", "cid", "eth0").is_err());
        assert!(cache_file_path(d, "net", "", "eth0").is_err());
        assert!(cache_file_path(d, "net", "cid", "").is_err());
    }

    #[test]
    fn serialized_shape_matches_libcni() {
        let info = CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: "c1".into(),
            config: b"{\"name\":\"n\"}".to_vec(),
            ifname: "eth0".into(),
            network_name: "n".into(),
            ..Default::default()
        };
        let s = serde_json::to_string(&info).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"cniCacheV1","containerId":"c1","config":"eyJuYW1lIjoibiJ9","ifName":"eth0","networkName":"n"}"#
        );
        let full = CachedInfo {
            netns: "/run/netns/x".into(),
            cni_args: vec![("K".into(), "V".into())],
            capability_args: json!({"mac": "aa:bb:cc:dd:ee:ff"}).as_object().unwrap().clone(),
            result: Some(json!({"cniVersion": "1.0.0"})),
            ..info
        };
        let v: Value = serde_json::to_value(&full).unwrap();
        assert_eq!(v["cniArgs"], json!([["K", "V"]]));
        assert_eq!(v["capabilityArgs"]["mac"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(v["netns"], "/run/netns/x");
        assert_eq!(v["result"]["cniVersion"], "1.0.0");
        // Go writes null for a nil slice in some versions; accept it.
        let back: CachedInfo = serde_json::from_value(json!({
            "kind": "cniCacheV1", "containerId": "c", "config": null, "ifName": "e",
            "networkName": "n", "cniArgs": null, "capabilityArgs": null
        }))
        .unwrap();
        assert!(back.cni_args.is_empty() && back.config.is_empty());
    }

    #[test]
    fn write_read_list_remove() {
        let t = tmp("rt");
        let d = t.path();
        let mk = |net: &str, cid: &str, ifn: &str| CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: cid.into(),
            config: b"conf".to_vec(),
            ifname: ifn.into(),
            network_name: net.into(),
            netns: "/run/netns/p".into(),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion": "1.0.0", "ips": []})),
        };
        let a = mk("net", "c1", "eth0");
        let p = write(d, &a).unwrap();
        assert_eq!(p, d.join("results/net-c1-eth0"));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&p), 0o600);
            assert_eq!(mode(&d.join("results")), 0o700);
        }
        assert_eq!(read_info(&p).unwrap().unwrap(), a);
        assert_eq!(read_result(&p).unwrap().unwrap()["cniVersion"], "1.0.0");
        write(d, &mk("net", "c2", "eth0")).unwrap();
        write(d, &mk("other", "c1", "net1")).unwrap();
        // Foreign/legacy files are skipped by the listing.
        std::fs::write(d.join("results/legacy-c1-eth0"), r#"{"cniVersion":"0.4.0"}"#).unwrap();
        let all = list_attachments(d, None).unwrap();
        let keys: Vec<_> = all.iter().map(|i| format!("{}/{}/{}", i.network_name, i.container_id, i.ifname)).collect();
        assert_eq!(keys, ["net/c1/eth0", "net/c2/eth0", "other/c1/net1"]);
        let c1 = list_attachments(d, Some("c1")).unwrap();
        assert_eq!(c1.len(), 2);
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read_info(&p).unwrap(), None);
        assert_eq!(read_result(&p).unwrap(), None);
        std::fs::remove_dir_all(d).unwrap();
        assert!(list_attachments(d, None).unwrap().is_empty());
    }

    #[test]
    fn legacy_result_only_cache() {
        let t = tmp("legacy");
        let d = t.path();
        std::fs::create_dir_all(d.join("results")).unwrap();
        let p = d.join("results/n-c-eth0");
        std::fs::write(&p, r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24"}]}"#).unwrap();
        let r = read_result(&p).unwrap().unwrap();
        assert_eq!(r["cniVersion"], "0.3.1");
        assert!(read_info(&p).is_err());
        std::fs::write(&p, "garbage").unwrap();
        assert!(read_result(&p).is_err());
    }
}
