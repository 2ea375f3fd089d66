//! Command line: flanneld's flag names where flanneld has the flag, plus rcni's own.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "usage: rcni-overlay [run|status|leave] [flags]
  --etcd-endpoints URLS     comma list (default http://127.0.0.1:2379)
  --etcd-prefix PREFIX      key prefix (default /coreos.com/network)
  --etcd-certfile/--etcd-keyfile/--etcd-cafile PATH   TLS client certificate, key, CA
  --iface NAME|IP           underlay device or address (default: the default route's device)
  --public-ip IP            address published to peers and used as the VTEP's local address
  --subnet-file PATH        (default /run/flannel/subnet.env)
  --ip-masq                 masquerade traffic from the cluster network that leaves it (one nftables
                            rule); subnet.env then says FLANNEL_IPMASQ=true
  --lease-ttl DURATION      subnet lease TTL (default 24h)
  --state-dir PATH          (default /run/rcni/overlay)
  --resync DURATION         full kernel resync period (default 60s)
  --mass-delete-grace DURATION  how long a snapshot removing most peers waits (default 5m)
  --vtep-name NAME          (default flannel.<VNI>)
  --healthz-ip IP           address of the /healthz and /metrics listener (default 0.0.0.0)
  --healthz-port PORT       its port (default 0: no listener, as flanneld)
  --lease-only              hold the lease and write subnet.env, program no device or peers";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Status,
    Leave,
}

#[derive(Debug, Clone)]
pub struct Flags {
    pub mode: Mode,
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
    pub iface: Option<String>,
    pub public_ip: Option<IpAddr>,
    pub subnet_file: PathBuf,
    pub ip_masq: bool,
    pub lease_ttl: Duration,
    pub state_dir: PathBuf,
    pub resync: Duration,
    pub mass_delete_grace: Duration,
    pub vtep_name: Option<String>,
    pub lease_only: bool,
    pub healthz_ip: IpAddr,
    pub healthz_port: u16,
}

/// `90s`, `5m`, `24h`, `2d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?} (e.g. 90s, 5m, 24h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => return Err(format!("invalid duration {s:?} (e.g. 90s, 5m, 24h)")),
    };
    Ok(Duration::from_secs(secs))
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags, String> {
        let mut f = Flags {
            mode: Mode::Run,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/coreos.com/network".into(),
            certfile: None,
            keyfile: None,
            cafile: None,
            iface: None,
            public_ip: None,
            subnet_file: "/run/flannel/subnet.env".into(),
            ip_masq: false,
            lease_ttl: Duration::from_secs(24 * 3600),
            state_dir: "/run/rcni/overlay".into(),
            resync: Duration::from_secs(60),
            mass_delete_grace: Duration::from_secs(300),
            vtep_name: None,
            lease_only: false,
            healthz_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            healthz_port: 0,
        };
        let mut it = args.iter().peekable();
        match it.peek().map(|s| s.as_str()) {
            Some("run") => {
                it.next();
            }
            Some("status") => {
                it.next();
                f.mode = Mode::Status;
            }
            Some("leave") => {
                it.next();
                f.mode = Mode::Leave;
            }
            _ => {}
        }
        while let Some(a) = it.next() {
            // Both `--flag value` and `--flag=value`, as flanneld accepts.
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let mut value = || -> Result<String, String> {
                inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--etcd-endpoints" => {
                    f.endpoints =
                        value()?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                }
                "--etcd-prefix" => f.prefix = value()?.trim_end_matches('/').to_string(),
                "--etcd-certfile" => f.certfile = Some(value()?.into()),
                "--etcd-keyfile" => f.keyfile = Some(value()?.into()),
                "--etcd-cafile" => f.cafile = Some(value()?.into()),
                "--iface" => f.iface = Some(value()?),
                "--public-ip" => {
                    let v = value()?;
                    f.public_ip = Some(v.parse().map_err(|_| format!("--public-ip {v:?} is not an IP address"))?)
                }
                "--subnet-file" => f.subnet_file = value()?.into(),
                "--ip-masq" => f.ip_masq = inline.as_deref().is_none_or(|v| v == "true"),
                "--lease-ttl" => f.lease_ttl = parse_duration(&value()?)?,
                "--state-dir" => f.state_dir = value()?.into(),
                "--resync" => f.resync = parse_duration(&value()?)?,
                "--mass-delete-grace" => f.mass_delete_grace = parse_duration(&value()?)?,
                "--vtep-name" => f.vtep_name = Some(value()?),
                "--lease-only" => f.lease_only = true,
                "--healthz-ip" => {
                    let v = value()?;
                    f.healthz_ip = v.parse().map_err(|_| format!("--healthz-ip {v:?} is not an IP address"))?
                }
                "--healthz-port" => {
                    let v = value()?;
                    f.healthz_port = v.parse().map_err(|_| format!("--healthz-port {v:?} is not a port (0-65535)"))?
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown flag {other:?}\n{USAGE}")),
            }
        }
        if f.endpoints.is_empty() {
            return Err("--etcd-endpoints is empty".into());
        }
        if f.lease_ttl < Duration::from_secs(2) {
            return Err("--lease-ttl must be at least 2s (etcd's minimum)".into());
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_durations() {
        let a: Vec<String> = ["status", "--etcd-endpoints=http://a:2379,http://b:2379", "--lease-ttl", "5s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = Flags::parse(&a).unwrap();
        assert_eq!(f.mode, Mode::Status);
        assert_eq!(f.endpoints.len(), 2);
        assert_eq!(f.lease_ttl, Duration::from_secs(5));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5x").is_err());
        assert!(Flags::parse(&["--bogus".to_string()]).is_err());
    }
}
