//! A real etcd (Debian's etcd-server) in its own netns on a [`Switch`] at 198.18.0.254, its data in a
//! temp dir; plus the process guard and the polling helper the agent tests share.

use super::underlay::Switch;
use super::{NodeNs, Output, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD_IP: &str = "198.18.0.254";

/// A process started in a netns; SIGKILLed and reaped on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn spawn(ns: &str, program: &Path, args: &[String], log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc(Some(child))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.0.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Sends `signal` (e.g. "TERM", "STOP", "CONT"). `ip netns exec` execs the program, so the child's
    /// pid is the program's.
    pub fn signal(&self, signal: &str) {
        let c = self.0.as_ref().expect("a running process");
        assert!(Command::new("kill").args([&format!("-{signal}"), &c.id().to_string()]).status().unwrap().success());
    }

    /// SIGTERM (a graceful stop, as systemd does on restart) and the exit status once it has exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let c = self.0.as_mut().expect("a running process");
        let mut status = None;
        wait_for("the process to exit on SIGTERM", Duration::from_secs(30), || {
            status = c.try_wait().unwrap();
            status.is_some()
        });
        self.0 = None;
        status.unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running process").id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 100 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Client TLS material for etcd (PEM files).
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// etcd in its own netns on the switch.
pub struct Etcd {
    pub proc: Proc,
    pub ns: NodeNs,
    pub data: TempDir,
    pub tls: Option<EtcdTls>,
}

impl Etcd {
    pub fn start(tag: &str, switch: &Switch) -> Etcd {
        Etcd::start_with(tag, switch, None)
    }

    /// With `tls`: clients must present a certificate signed by its CA (`--client-cert-auth`).
    pub fn start_with(tag: &str, switch: &Switch, tls: Option<EtcdTls>) -> Etcd {
        let ns = NodeNs::new(&format!("{tag}-etcd"));
        switch.plug(&ns, "pe", &format!("{ETCD_IP}/24"));
        // On tmpfs: etcd fsyncs every write (lease grants, transactions), and on a disk shared with
        // parallel builds one fdatasync can take seconds, longer than the agents' 5 s test leases and
        // request timeouts. Its warnings ("slow fdatasync", "took too long") are in the log printed
        // when a test fails.
        let shm = Path::new("/dev/shm");
        let data = if shm.is_dir() {
            TempDir::new_in(shm, &format!("{tag}-etcd"))
        } else {
            TempDir::new(&format!("{tag}-etcd"))
        };
        let mut e = Etcd { proc: Proc(None), ns, data, tls };
        e.restart();
        e
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{ETCD_IP}:2379")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("etcd.log")).unwrap_or_default()
    }

    pub fn restart(&mut self) {
        let url = self.url();
        let mut args: Vec<String> = [
            "--name",
            "s",
            "--data-dir",
            &self.data.join("d").to_string_lossy(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "s=http://127.0.0.1:2380",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(t) = &self.tls {
            for (flag, p) in
                [("--cert-file", &t.server_cert), ("--key-file", &t.server_key), ("--trusted-ca-file", &t.ca)]
            {
                args.push(flag.into());
                args.push(p.to_string_lossy().into_owned());
            }
            args.push("--client-cert-auth".into());
        }
        self.proc = Proc::spawn(self.ns.name(), Path::new("/usr/bin/etcd"), &args, &self.data.join("etcd.log"));
        wait_for("etcd to answer", Duration::from_secs(30), || self.ctl(&["endpoint", "health"]).success());
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut c = self.ns.cmd("etcdctl").arg("--endpoints").arg(self.url());
        if let Some(t) = &self.tls {
            c = c.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
        }
        c.args(args).env("ETCDCTL_API", "3").run()
    }

    /// The keys under `<prefix>/subnets/`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.ctl(&["get", "--prefix", "--keys-only", &format!("{prefix}/subnets/")]).ok();
        out.stdout.lines().filter(|l| !l.is_empty()).map(String::from).collect()
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]).ok();
        out.json()[0]["Status"]["header"]["revision"].as_i64().expect("revision in endpoint status")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- etcd log ----\n{}", self.log());
        }
    }
}
