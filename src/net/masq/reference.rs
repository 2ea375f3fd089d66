//! The reference plugins' nftables masquerade (v1.6+), removed on DEL and GC so that rcni can replace
//! them on a node: table `inet cni_plugins_masquerade`, one rule per pod address in chain `masq_checks`,
//! commented `<h16(network)>-<h16(ifname:containerID)>, net: ...`.

use super::nft::{MAX_ATTEMPTS, nl_err};
use super::{Owner, PodEntry, Result, sha512_hex};
use crate::net::nft::{BatchOp, NFPROTO_INET, Nfnl, absent, retryable};

/// The reference plugins' nftables backend (v1.6+): table `inet cni_plugins_masquerade`, one rule per
/// pod address in chain `masq_checks`, commented `<h16(network)>-<h16(ifname:containerID)>, net: ...`.
const REF_TABLE: &str = "cni_plugins_masquerade";
const REF_CHAIN: &str = "masq_checks";

fn ref_network_hash(network: &str) -> String {
    sha512_hex(network)[..16].to_string()
}

fn ref_instance_hash(network: &str, owner: &Owner) -> String {
    format!("{}-{}", ref_network_hash(network), &sha512_hex(&format!("{}:{}", owner.ifname, owner.container_id))[..16])
}

/// Deletes the reference nftables rules matching `stale` (a predicate on the rule comment). One rule
/// dump when the reference table does not exist.
fn remove_reference_rules(nl: &mut Nfnl, network: &str, stale: impl Fn(&str) -> bool) -> Result<()> {
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(nl_err(network, "reading the nf_tables generation", e)),
        };
        let rules = match nl.dump_rules(NFPROTO_INET, REF_TABLE, REF_CHAIN) {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => {
                return Err(nl_err(network, &format!("listing chain inet {REF_TABLE} {REF_CHAIN}"), e));
            }
        };
        let ops: Vec<BatchOp<'_>> = rules
            .iter()
            .filter(|r| r.comment.as_deref().is_some_and(&stale))
            .map(|r| BatchOp::DelRule { chain: REF_CHAIN, handle: r.handle })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        match nl.batch(Some(gen_id), NFPROTO_INET, REF_TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => {
                return Err(nl_err(
                    network,
                    &format!("deleting rules of the reference plugins from chain inet {REF_TABLE} {REF_CHAIN}"),
                    e,
                ));
            }
        }
    }
    Err(nl_err(
        network,
        &format!("deleting rules from chain inet {REF_TABLE} {REF_CHAIN}: the ruleset kept changing; retry"),
        last_err.expect("at least one attempt"),
    ))
}

/// Removes the rules the reference plugins' nftables backend made for this pod (if any).
pub fn teardown_reference(network: &str, pod: &PodEntry) -> Result<()> {
    let prefix = ref_instance_hash(network, &pod.owner());
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    remove_reference_rules(&mut nl, network, |c| c.starts_with(&prefix))
}

/// Removes the reference plugins' nftables rules of `network` whose attachment is not valid.
pub fn gc_reference(network: &str, valid: &[Owner]) -> Result<()> {
    let net_prefix = format!("{}-", ref_network_hash(network));
    let valid: Vec<String> = valid.iter().map(|o| ref_instance_hash(network, o)).collect();
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    remove_reference_rules(&mut nl, network, |c| {
        c.starts_with(&net_prefix) && !valid.iter().any(|v| c.starts_with(v.as_str()))
    })
}
