//! `backend: "iptables"` (also chosen by `externalSetMarkChain`): the reference portmap's iptables rules,
//! rule for rule as it writes them (layout in [`super::reference`]), so either implementation's DEL
//! removes the other's ADD. Per family one `iptables-save -t nat` and one `iptables-restore --noflush`:
//! the change is one transaction, where the reference runs about 20 commands per mapping.
//!
//! Better than the reference, on purpose: a repeated ADD rewrites the container's chain instead of
//! appending to it (changed mappings leave no old rules), and every command has a deadline. DEL is
//! [`super::reference::remove_leftovers`], as for a pod the reference added.

use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::reference::{DNAT_CHAIN, MASQ_CHAIN, SETMARK_CHAIN, dn_chain};
use super::{Error, Mapping, Proto, Result};
use crate::net::addr::IpFamily;
use crate::net::command::{Command, CommandError};

/// iptables calls are bounded (the reference waits for the xtables lock forever, plugins#510).
pub(super) const TIMEOUT: Duration = Duration::from_secs(20);
/// multiport takes at most 15 ports per rule.
const PORTS_PER_RULE: usize = 15;
const MASQ_JUMP: &str = "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ";

/// Who marks a connection for masquerade: our `CNI-HOSTPORT-SETMARK` with a mark bit, or an external
/// chain (`externalSetMarkChain`, e.g. kube-proxy's `KUBE-MARK-MASQ`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Bit(u8),
    Chain(String),
}

/// One attachment's rules in one family.
#[derive(Debug, Clone)]
pub struct Layout {
    pub network: String,
    pub container_id: String,
    pub fam: IpFamily,
    /// The pod's address with its prefix: the hairpin source is the subnet, as in the reference.
    pub pod: IpNetwork,
    /// Every (protocol, host port) configured, of either family: the reference's entry rules list them
    /// all (harmless for the other family's host IPs).
    pub entry_ports: Vec<(Proto, u16)>,
    /// The mappings of this family, in configuration order.
    pub mappings: Vec<Mapping>,
    pub snat: bool,
    pub masq_all: bool,
    pub mark: Mark,
    /// `conditionsV4` / `conditionsV6` of this family, appended to the entry rules as given.
    pub conditions: Vec<String>,
}

/// An argument as iptables-restore reads it: quoted when it holds a space.
fn quoted(arg: &str) -> String {
    if arg.contains(' ') { format!("\"{}\"", arg.replace('"', "\\\"")) } else { arg.to_string() }
}

/// `--comment "dnat name: \"n\" id: \"c\""`, cut as the reference cuts it (256 bytes).
fn entry_comment(network: &str, container_id: &str) -> String {
    let mut c = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    c.truncate(256);
    quoted(&c)
}

fn host_prefix(a: IpAddr) -> String {
    let bits = if a.is_ipv4() { 32 } else { 128 };
    format!("{a}/{bits}")
}

impl Layout {
    pub fn dn_chain(&self) -> String {
        dn_chain(&self.network, &self.container_id)
    }

    fn mark_target(&self) -> &str {
        match &self.mark {
            Mark::Bit(_) => SETMARK_CHAIN,
            Mark::Chain(c) => c,
        }
    }

    /// The container chain's rules in `iptables-save` form: per mapping the hairpin mark, for IPv4 the
    /// localhost mark (both with snat; without `masqAll`, which marks every source), then the DNAT.
    pub fn dn_rules(&self) -> Vec<String> {
        let dn = self.dn_chain();
        let mut out = Vec::new();
        for m in &self.mappings {
            let proto = m.proto.as_str();
            let dst = m.host_ip.map(|h| format!("-d {} ", host_prefix(h))).unwrap_or_default();
            let matches = format!("{dst}-p {proto} -m {proto} --dport {}", m.host_port);
            if self.snat {
                let mark = self.mark_target();
                if self.masq_all {
                    out.push(format!("-A {dn} {matches} -j {mark}"));
                } else {
                    let subnet = IpNetwork::new(self.pod.network(), self.pod.prefix()).expect("a valid prefix");
                    out.push(format!("-A {dn} -s {subnet} {matches} -j {mark}"));
                    if self.fam == IpFamily::V4 {
                        out.push(format!("-A {dn} -s 127.0.0.1/32 {matches} -j {mark}"));
                    }
                }
            }
            let to = match m.target {
                IpAddr::V4(a) => format!("{a}:{}", m.target_port),
                IpAddr::V6(a) => format!("[{a}]:{}", m.target_port),
            };
            out.push(format!("-A {dn} {matches} -j DNAT --to-destination {to}"));
        }
        out
    }

    /// The entry rules in `CNI-HOSTPORT-DNAT` (iptables-restore input, the reference's argument order):
    /// per protocol (sorted) up to 15 ports each, with the conditions.
    pub fn entry_rules(&self) -> Vec<String> {
        let mut protos: Vec<Proto> = self.entry_ports.iter().map(|(p, _)| *p).collect();
        protos.sort_by_key(|p| p.as_str());
        protos.dedup();
        let comment = entry_comment(&self.network, &self.container_id);
        let conditions: Vec<String> = self.conditions.iter().map(|c| quoted(c)).collect();
        let tail = if conditions.is_empty() { String::new() } else { format!(" {}", conditions.join(" ")) };
        let mut out = Vec::new();
        for proto in protos {
            let ports: Vec<String> =
                self.entry_ports.iter().filter(|(p, _)| *p == proto).map(|(_, port)| port.to_string()).collect();
            for chunk in ports.chunks(PORTS_PER_RULE) {
                out.push(format!(
                    "-A {DNAT_CHAIN} -m comment --comment {comment} -m multiport -p {} --destination-ports {}{tail} -j {}",
                    proto.as_str(),
                    chunk.join(","),
                    self.dn_chain()
                ));
            }
        }
        out
    }

    /// The shared rules this layout needs, in `iptables-save` form: (chain, rule, insert first).
    fn shared_rules(&self) -> Vec<(&'static str, String, bool)> {
        let mut v = vec![
            ("PREROUTING", format!("-A PREROUTING -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"), false),
            ("OUTPUT", format!("-A OUTPUT -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"), false),
        ];
        if let (true, Mark::Bit(bit)) = (self.snat, &self.mark) {
            let m = format!("0x{:x}/0x{:x}", 1u32 << bit, 1u32 << bit);
            v.push((
                SETMARK_CHAIN,
                format!(
                    "-A {SETMARK_CHAIN} -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark {m}"
                ),
                false,
            ));
            v.push((MASQ_CHAIN, format!("-A {MASQ_CHAIN} -m mark --mark {m} -j MASQUERADE"), false));
            v.push(("POSTROUTING", MASQ_JUMP.to_string(), true));
        }
        v
    }

    fn own_chains(&self) -> Vec<String> {
        let mut v = vec![DNAT_CHAIN.to_string()];
        if let (true, Mark::Bit(_)) = (self.snat, &self.mark) {
            v.push(SETMARK_CHAIN.to_string());
            v.push(MASQ_CHAIN.to_string());
        }
        v
    }

    /// The `iptables-restore --noflush` script that brings the nat table `save` (an `iptables-save -t nat`
    /// listing) to this layout: missing shared chains and rules added, the container chain rewritten, its
    /// entry rules replaced. (Declaring a chain that exists would flush it: only missing ones are declared.)
    pub fn restore_script(&self, save: &str) -> String {
        let chains: Vec<&str> =
            save.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|r| r.split(' ').next()).collect();
        let rules: Vec<&str> = save.lines().filter(|l| l.starts_with("-A ")).collect();
        let dn = self.dn_chain();
        let mut s = String::from("*nat\n");
        for c in self.own_chains().iter().chain([&dn]) {
            if !chains.contains(&c.as_str()) {
                s.push_str(&format!(":{c} - [0:0]\n"));
            }
        }
        for (chain, rule, first) in self.shared_rules() {
            if !rules.contains(&rule.as_str()) {
                let rest = &rule[3 + chain.len()..];
                s.push_str(&if first { format!("-I {chain} 1{rest}\n") } else { format!("{rule}\n") });
            }
        }
        for r in &rules {
            if r.starts_with(&format!("-A {DNAT_CHAIN} ")) && r.ends_with(&format!(" -j {dn}")) {
                s.push_str(&format!("-D{}\n", &r[2..]));
            }
        }
        if chains.contains(&dn.as_str()) {
            s.push_str(&format!("-F {dn}\n"));
        }
        for r in self.dn_rules().iter().chain(&self.entry_rules()) {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }

    /// CHECK: what differs between `save` and this layout (empty when it is in place): the container
    /// chain rule for rule, one entry rule per expected one, and the shared rules.
    pub fn differences(&self, save: &str) -> Vec<String> {
        let rules: Vec<&str> = save.lines().filter(|l| l.starts_with("-A ")).collect();
        let dn = self.dn_chain();
        let mut out = Vec::new();
        let found: Vec<&str> = rules.iter().copied().filter(|r| r.starts_with(&format!("-A {dn} "))).collect();
        let wanted = self.dn_rules();
        if found != wanted.iter().map(String::as_str).collect::<Vec<_>>() {
            out.push(format!("chain {dn} holds {found:?}, expected {wanted:?}"));
        }
        let entries = rules
            .iter()
            .filter(|r| r.starts_with(&format!("-A {DNAT_CHAIN} ")) && r.ends_with(&format!(" -j {dn}")))
            .count();
        if entries != self.entry_rules().len() {
            out.push(format!(
                "{DNAT_CHAIN} has {entries} rules jumping to {dn}, expected {}",
                self.entry_rules().len()
            ));
        }
        for (_, rule, _) in self.shared_rules() {
            if !rules.contains(&rule.as_str()) {
                out.push(format!("missing: {rule}"));
            }
        }
        out
    }
}

fn tool(fam: IpFamily, suffix: &str) -> String {
    format!("{}{suffix}", fam.iptables())
}

fn cmd_err(what: String, err: CommandError) -> Error {
    let hint = if err.is_not_installed() {
        " (backend \"iptables\" needs the iptables package: iptables-save and iptables-restore)".to_string()
    } else {
        String::new()
    };
    Error::Command { what, err, hint }
}

/// `iptables-save -t nat` of the family.
pub fn save(fam: IpFamily) -> Result<String> {
    save_nat(fam).map_err(|e| cmd_err(format!("portmap: {} -t nat", tool(fam, "-save")), e))
}

pub(super) fn save_nat(fam: IpFamily) -> std::result::Result<String, CommandError> {
    Command::new(&tool(fam, "-save")).args(["-t", "nat"]).timeout(TIMEOUT).run().map(|o| o.stdout)
}

/// One `iptables-restore --noflush` transaction of the family (waiting at most 5 s for the xtables lock).
pub(super) fn restore(fam: IpFamily, script: &str) -> std::result::Result<(), CommandError> {
    Command::new(&tool(fam, "-restore")).args(["-w", "5", "--noflush"]).stdin(script).timeout(TIMEOUT).run().map(|_| ())
}

/// Writes the layout in one iptables-restore transaction; returns whether the container's chain was
/// there before (a repeated ADD).
pub fn apply(layout: &Layout) -> Result<bool> {
    let before = save(layout.fam)?;
    let existed =
        before.lines().any(|l| l.strip_prefix(':').is_some_and(|r| r.split(' ').next() == Some(&layout.dn_chain())));
    let script = layout.restore_script(&before);
    restore(layout.fam, &script).map(|_| existed).map_err(|e| {
        let what =
            format!("portmap: writing {}'s host port rules with {}", layout.container_id, tool(layout.fam, "-restore"));
        let mut err = cmd_err(what, e);
        if let Error::Command { hint, .. } = &mut err {
            hint.push_str(&format!("\nscript:\n{script}"));
        }
        err
    })
}

/// GC: removes the chains (and entry rules) of `network`'s containers not in `keep`, in both
/// families, never another network's; returns the container IDs removed.
pub fn remove_stale(network: &str, keep: &std::collections::HashSet<String>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for fam in IpFamily::BOTH {
        let mut text = match save(fam) {
            Ok(t) => t,
            Err(Error::Command { err, .. }) if err.is_not_installed() => continue,
            Err(e) => return Err(e),
        };
        // One container at a time: whether the shared chains go depends on what is left.
        while let Some(id) = containers_of(&text, network).into_iter().find(|id| !keep.contains(id)) {
            let dn = dn_chain(network, &id);
            let Some(script) = super::reference::removal_script(&text, &dn) else { break };
            restore(fam, &script).map_err(|e| cmd_err(format!("portmap: removing {dn} of stale container {id}"), e))?;
            removed.push(id);
            text = save(fam)?;
        }
    }
    Ok(removed)
}

/// The container IDs of `network` that have entry rules in the nat table `save` (for GC).
pub fn containers_of(save: &str, network: &str) -> Vec<String> {
    let prefix = format!("--comment \"dnat name: \\\"{network}\\\" id: \\\"");
    let mut out: Vec<String> = save
        .lines()
        .filter(|l| l.starts_with(&format!("-A {DNAT_CHAIN} ")))
        .filter_map(|l| {
            l.split_once(&prefix).and_then(|(_, rest)| rest.split_once("\\\"")).map(|(id, _)| id.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(mark: Mark, masq_all: bool) -> Layout {
        Layout {
            network: "mynet".into(),
            container_id: "ctrA".into(),
            fam: IpFamily::V4,
            pod: "10.88.0.2/24".parse().unwrap(),
            entry_ports: vec![(Proto::Tcp, 8080)],
            mappings: vec![Mapping {
                proto: Proto::Tcp,
                host_port: 8080,
                host_ip: None,
                target: "10.88.0.2".parse().unwrap(),
                target_port: 80,
            }],
            snat: true,
            masq_all,
            mark,
            conditions: vec!["!".into(), "-s".into(), "198.18.0.0/24".into()],
        }
    }

    #[test]
    fn the_container_chain_is_the_references() {
        // What /usr/lib/cni/portmap 1.1.1 wrote (iptables-save) for this mapping.
        let l = layout(Mark::Bit(13), false);
        assert_eq!(
            l.dn_rules(),
            [
                "-A CNI-DN-f55d1ff5e9696738bd206 -s 10.88.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-f55d1ff5e9696738bd206 -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-f55d1ff5e9696738bd206 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80",
            ]
        );
        let ext = layout(Mark::Chain("KUBE-MARK-MASQ".into()), true);
        assert_eq!(ext.dn_rules()[0], "-A CNI-DN-f55d1ff5e9696738bd206 -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ");
        assert_eq!(ext.dn_rules().len(), 2, "masqAll marks every source: no separate localhost rule");
        assert!(!ext.restore_script("").contains(SETMARK_CHAIN), "an external mark chain replaces ours");
    }

    #[test]
    fn a_repeated_add_rewrites_instead_of_appending() {
        let l = layout(Mark::Bit(13), false);
        let first = l.restore_script("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert!(first.contains(":CNI-DN-f55d1ff5e9696738bd206 - [0:0]") && !first.contains("-F "), "{first}");
        assert!(first.contains("-I POSTROUTING 1 -m comment"), "{first}");
        let entry = "-A CNI-HOSTPORT-DNAT ! -s 198.18.0.0/24 -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \
                     \\\"ctrA\\\"\" -m multiport --dports 8080 -j CNI-DN-f55d1ff5e9696738bd206";
        let save = format!(
            "*nat\n:CNI-DN-f55d1ff5e9696738bd206 - [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n{entry}\n{}\nCOMMIT\n",
            l.dn_rules().join("\n")
        );
        let again = l.restore_script(&save);
        assert!(!again.contains(":CNI-DN-"), "an existing chain is not declared (that would flush it): {again}");
        assert!(again.contains("-F CNI-DN-f55d1ff5e9696738bd206") && again.contains(&format!("-D{}", &entry[2..])));
        assert_eq!(containers_of(&save, "mynet"), ["ctrA"]);
        assert!(containers_of(&save, "other").is_empty());
    }
}
