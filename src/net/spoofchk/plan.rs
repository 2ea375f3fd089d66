//! The batches that write and remove one attachment's spoof check (applied atomically, checked
//! against the ruleset generation they were planned from).

use super::names::{BASE_CHAIN, BASE_PRIORITY, HOOK_PREROUTING, Names};
use crate::net::Mac;
use crate::net::nft::codec::{udata_comment, udata_comment_and_owner};
use crate::net::nft::{BatchOp, Hook, Stmt};

/// `type filter hook prerouting priority dstnat; policy accept`.
pub fn base_hook() -> Hook {
    Hook { chain_type: "filter".into(), hooknum: HOOK_PREROUTING, priority: BASE_PRIORITY, policy: 1 }
}

/// Table and chains (created if missing), the regular chains flushed and refilled, the `PREROUTING`
/// rules with the given handles deleted and, with `jump`, the jump added carrying `owner`.
pub fn setup<'a>(
    n: &'a Names,
    host_veth: &str,
    mac: Mac,
    delete_handles: &[u64],
    jump: Option<&str>,
) -> Vec<BatchOp<'a>> {
    let mut ops = vec![
        BatchOp::NewTable,
        BatchOp::NewChain { chain: BASE_CHAIN, hook: Some(base_hook()) },
        BatchOp::NewChain { chain: &n.iface_chain, hook: None },
        BatchOp::NewChain { chain: &n.mac_chain, hook: None },
        BatchOp::FlushChain { chain: &n.iface_chain },
        BatchOp::FlushChain { chain: &n.mac_chain },
    ];
    ops.extend(delete_handles.iter().map(|h| BatchOp::DelRule { chain: BASE_CHAIN, handle: *h }));
    if let Some(owner) = jump {
        ops.push(BatchOp::NewRule {
            chain: BASE_CHAIN,
            stmts: vec![Stmt::iifname(host_veth), Stmt::Jump(n.iface_chain.clone())],
            udata: udata_comment_and_owner(&n.comment, Some(owner)),
        });
    }
    let rule = |chain: &'a str, stmts: Vec<Stmt>| BatchOp::NewRule { chain, stmts, udata: udata_comment(&n.comment) };
    ops.push(rule(&n.iface_chain, vec![Stmt::Jump(n.mac_chain.clone())]));
    ops.push(rule(&n.mac_chain, vec![Stmt::ether_saddr(mac), Stmt::Return]));
    ops.push(rule(&n.mac_chain, vec![Stmt::Drop]));
    ops
}

/// `PREROUTING` rules by handle first (they reference the chains), then the chains.
pub fn teardown<'a>(rule_handles: &[u64], chains: &[&'a str]) -> Vec<BatchOp<'a>> {
    let mut ops: Vec<BatchOp<'a>> =
        rule_handles.iter().map(|h| BatchOp::DelRule { chain: BASE_CHAIN, handle: *h }).collect();
    ops.extend(chains.iter().map(|c| BatchOp::DelChain { chain: c }));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(ops: &[BatchOp<'_>]) -> Vec<String> {
        ops.iter()
            .map(|o| match o {
                BatchOp::NewTable => "table".to_string(),
                BatchOp::NewChain { chain, hook } => {
                    format!("chain {chain}{}", if hook.is_some() { " hook" } else { "" })
                }
                BatchOp::FlushChain { chain } => format!("flush {chain}"),
                BatchOp::DelChain { chain } => format!("delete chain {chain}"),
                BatchOp::DelRule { chain, handle } => format!("delete rule {chain} {handle}"),
                BatchOp::NewRule { chain, stmts, .. } => {
                    format!("rule {chain}: {}", stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "))
                }
                _ => "other".to_string(),
            })
            .collect()
    }

    #[test]
    fn setup_creates_and_fills_in_one_transaction() {
        let n = Names::new("ctr-abc123", "eth0");
        let mac = "b2:f2:df:50:60:44".parse().unwrap();
        let ops = setup(&n, "vethc5b5470d", mac, &[4, 9], Some("brnet"));
        assert_eq!(
            kinds(&ops),
            [
                "table",
                "chain PREROUTING hook",
                "chain cni-br-iface-ctr-abc123-eth0",
                "chain cni-br-iface-ctr-abc123-eth0-mac",
                "flush cni-br-iface-ctr-abc123-eth0",
                "flush cni-br-iface-ctr-abc123-eth0-mac",
                "delete rule PREROUTING 4",
                "delete rule PREROUTING 9",
                "rule PREROUTING: iifname \"vethc5b5470d\" jump cni-br-iface-ctr-abc123-eth0",
                "rule cni-br-iface-ctr-abc123-eth0: jump cni-br-iface-ctr-abc123-eth0-mac",
                "rule cni-br-iface-ctr-abc123-eth0-mac: ether saddr b2:f2:df:50:60:44 return",
                "rule cni-br-iface-ctr-abc123-eth0-mac: drop",
            ]
        );
        let BatchOp::NewRule { udata, .. } = &ops[8] else { panic!() };
        assert_eq!(crate::net::nft::codec::parse_udata_owner(udata).as_deref(), Some("brnet"));
        assert_eq!(crate::net::nft::codec::parse_udata_comment(udata).as_deref(), Some(n.comment.as_str()));
        let kept = setup(&n, "veth1", mac, &[], None);
        assert_eq!(kept.len(), 9);
        assert!(kinds(&kept).iter().all(|k| !k.starts_with("rule PREROUTING")));
    }

    #[test]
    fn teardown_deletes_rules_before_chains() {
        let ops = teardown(&[7], &["cni-br-iface-c1-eth0", "cni-br-iface-c1-eth0-mac"]);
        assert_eq!(
            kinds(&ops),
            ["delete rule PREROUTING 7", "delete chain cni-br-iface-c1-eth0", "delete chain cni-br-iface-c1-eth0-mac"]
        );
    }
}
