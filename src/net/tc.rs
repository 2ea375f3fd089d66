//! Traffic control over netlink: a token bucket (`tbf`) as a device's root qdisc, the `ingress` qdisc, and
//! a u32 match-all filter on it that redirects every packet to another device (`mirred`), plus reading
//! them back.
//!
//! netlink-packet-route has no tbf, so its parameters are encoded here (`struct tc_tbf_qopt`).

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};

use super::error::{NetError, Result};
use super::handle::NetHandle;

/// `1:` — the handle of the root tbf.
pub const TBF_HANDLE: TcHandle = TcHandle { major: 1, minor: 0 };
/// The parent of a device's root qdisc.
pub const ROOT: TcHandle = TcHandle::ROOT;
/// `ffff:` — the ingress qdisc's fixed handle.
pub const INGRESS_HANDLE: TcHandle = TcHandle { major: 0xffff, minor: 0 };

/// `TCA_TBF_PARMS` and `TCA_TBF_RATE64` (include/uapi/linux/pkt_sched.h).
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
/// `ETH_P_ALL` in network byte order, as the filter's protocol.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

/// Token bucket parameters as the kernel takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes that may wait in the queue.
    pub limit: u32,
    /// Bucket size, in scheduler ticks (see [`ticks_per_usec`]).
    pub buffer: u32,
}

impl Tbf {
    /// `struct tc_tbf_qopt`: rate and peak `tc_ratespec` (12 bytes each; the rate is the last u32), limit,
    /// buffer, mtu. A rate that does not fit in 32 bits goes in `TCA_TBF_RATE64` as well.
    fn options(&self) -> Vec<TcOption> {
        let mut qopt = [0u8; 36];
        qopt[8..12].copy_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        qopt[24..28].copy_from_slice(&self.limit.to_ne_bytes());
        qopt[28..32].copy_from_slice(&self.buffer.to_ne_bytes());
        let mut out = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt.to_vec()))];
        if self.rate > u32::MAX as u64 {
            out.push(TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, self.rate.to_ne_bytes().to_vec())));
        }
        out
    }

    /// The crate does not know tbf, so a dump hands back the whole `TCA_OPTIONS` as one opaque attribute:
    /// walk its nested attributes here.
    fn parse(options: &[TcOption]) -> Option<Tbf> {
        use netlink_packet_core::{Nla, NlasIterator};
        const TCA_OPTIONS: u16 = 2;
        let bytes = |nla: &DefaultNla| {
            let mut buf = vec![0u8; nla.value_len()];
            nla.emit_value(&mut buf);
            buf
        };
        let mut attrs: Vec<(u16, Vec<u8>)> = Vec::new();
        for o in options {
            let TcOption::Other(nla) = o else { continue };
            if nla.kind() == TCA_OPTIONS {
                let nested = bytes(nla);
                for inner in NlasIterator::new(&nested[..]).flatten() {
                    attrs.push((inner.kind(), inner.value().to_vec()));
                }
            } else {
                attrs.push((nla.kind(), bytes(nla)));
            }
        }
        let mut tbf = None;
        let mut rate64 = None;
        for (kind, buf) in &attrs {
            let u32_at = |i: usize| buf.get(i..i + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
            match *kind {
                TCA_TBF_PARMS => {
                    tbf = Some(Tbf { rate: u32_at(8)? as u64, limit: u32_at(24)?, buffer: u32_at(28)? });
                }
                TCA_TBF_RATE64 if buf.len() == 8 => rate64 = Some(u64::from_ne_bytes(buf[..8].try_into().unwrap())),
                _ => {}
            }
        }
        tbf.map(|t| Tbf { rate: rate64.unwrap_or(t.rate), ..t })
    }
}

/// A qdisc as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: TcHandle,
    pub parent: TcHandle,
    /// Parameters, when `kind` is "tbf".
    pub tbf: Option<Tbf>,
}

/// A filter on the ingress qdisc that redirects to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub prio: u16,
    /// Index of each device a mirred action redirects to, in order.
    pub targets: Vec<u32>,
}

/// Scheduler ticks per microsecond, from /proc/net/psched (the kernel's clock, as tc(8) reads it).
pub fn ticks_per_usec() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/net/psched").map_err(|e| NetError::io("read /proc/net/psched", e))?;
    let vals: Vec<u64> = text.split_whitespace().filter_map(|v| u64::from_str_radix(v, 16).ok()).collect();
    let bad = || NetError::from_errno(format!("unexpected /proc/net/psched {text:?}"), libc::EINVAL);
    let (&[mut t2us, us2t, clock_res, ..], true) = (vals.as_slice(), vals.len() >= 4) else { return Err(bad()) };
    if us2t == 0 {
        return Err(bad());
    }
    // Kernels with a nanosecond clock report t2us in the second field.
    if clock_res == 1_000_000_000 {
        t2us = us2t;
    }
    Ok(t2us as f64 / us2t as f64 * (clock_res as f64 / 1_000_000.0))
}

fn message(index: u32, parent: TcHandle, handle: TcHandle) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = parent;
    m.header.handle = handle;
    m
}

fn kind(attrs: &[TcAttribute]) -> Option<&str> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    })
}

impl NetHandle {
    /// The qdiscs of one device.
    pub async fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>> {
        let msg = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(index as i32));
        let all = self.dump(msg, format!("list qdiscs of link #{index}")).await?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == index as i32 => Some(q),
                _ => None,
            })
            .map(|q| {
                let kind = kind(&q.attributes).unwrap_or_default().to_string();
                let tbf = (kind == "tbf")
                    .then(|| {
                        q.attributes.iter().find_map(|a| match a {
                            TcAttribute::Options(o) => Tbf::parse(o),
                            _ => None,
                        })
                    })
                    .flatten();
                Qdisc { kind, handle: q.header.handle, parent: q.header.parent, tbf }
            })
            .collect())
    }

    /// Make a tbf the root qdisc of the device (`tc qdisc replace dev X root handle 1: tbf ...`): whatever
    /// root qdisc was there is replaced, so a repeated call is harmless.
    pub async fn replace_root_tbf(&self, index: u32, tbf: &Tbf) -> Result<()> {
        let mut m = message(index, TcHandle::ROOT, TBF_HANDLE);
        m.attributes.push(TcAttribute::Kind("tbf".into()));
        m.attributes.push(TcAttribute::Options(tbf.options()));
        let what = format!("set tbf rate {} B/s on link #{index}", tbf.rate);
        self.ack(RouteNetlinkMessage::NewQueueDiscipline(m), NLM_F_CREATE | NLM_F_REPLACE, what).await
    }

    /// Add the ingress qdisc (`ffff:`). `is_exists()` when the device has one already.
    pub async fn add_ingress_qdisc(&self, index: u32) -> Result<()> {
        let mut m = message(index, TcHandle::INGRESS, INGRESS_HANDLE);
        m.attributes.push(TcAttribute::Kind("ingress".into()));
        m.attributes.push(TcAttribute::Options(Vec::new()));
        let what = format!("add ingress qdisc on link #{index}");
        self.ack(RouteNetlinkMessage::NewQueueDiscipline(m), NLM_F_CREATE | NLM_F_EXCL, what).await
    }

    /// Delete the root qdisc (the device falls back to its default). `is_not_found()` when there is none
    /// of ours.
    pub async fn delete_root_qdisc(&self, index: u32) -> Result<()> {
        let m = message(index, TcHandle::ROOT, TcHandle::UNSPEC);
        self.ack(RouteNetlinkMessage::DelQueueDiscipline(m), 0, format!("delete root qdisc of link #{index}")).await
    }

    /// Delete the ingress qdisc and with it every filter on it.
    pub async fn delete_ingress_qdisc(&self, index: u32) -> Result<()> {
        let m = message(index, TcHandle::INGRESS, INGRESS_HANDLE);
        self.ack(RouteNetlinkMessage::DelQueueDiscipline(m), 0, format!("delete ingress qdisc of link #{index}")).await
    }

    /// Redirect everything arriving on `index` to the egress of `target` with one u32 match-all filter at
    /// `prio` on the ingress qdisc (classid 1:1, one mirred action). Filters already at that priority are
    /// removed first, so a repeated call leaves exactly one.
    pub async fn replace_ingress_redirect(&self, index: u32, prio: u16, target: u32) -> Result<()> {
        let info = ((prio as u32) << 16) | ETH_P_ALL_BE as u32;
        let mut del = message(index, INGRESS_HANDLE, TcHandle::UNSPEC);
        del.header.info = info;
        match self.ack(RouteNetlinkMessage::DelTrafficFilter(del), 0, "delete old redirect filter").await {
            Err(e) if !e.is_not_found() && e.errno() != Some(libc::EINVAL) => return Err(e),
            _ => {}
        }
        let mut m = message(index, INGRESS_HANDLE, TcHandle::UNSPEC);
        m.header.info = info;
        // One all-zero key: mask 0 matches every packet.
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut mirror = TcMirror::default();
        mirror.generic = TcActionGeneric::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = target;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
        ];
        m.attributes.push(TcAttribute::Kind("u32".into()));
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor: 1 })),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        let what = format!("add filter redirecting link #{index} to link #{target}");
        self.ack(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE | NLM_F_EXCL, what).await
    }

    /// The redirecting filters on the device's ingress qdisc (u32 entries without an action, such as the
    /// hash table the kernel makes, are left out).
    pub async fn ingress_redirects(&self, index: u32) -> Result<Vec<Redirect>> {
        let msg = RouteNetlinkMessage::GetTrafficFilter(message(index, INGRESS_HANDLE, TcHandle::UNSPEC));
        let all = self.dump(msg, format!("list ingress filters of link #{index}")).await?;
        let mut out = Vec::new();
        for m in all {
            let RouteNetlinkMessage::NewTrafficFilter(f) = m else { continue };
            let mut targets = Vec::new();
            for a in &f.attributes {
                let TcAttribute::Options(opts) = a else { continue };
                for o in opts {
                    let TcOption::U32(TcFilterU32Option::Action(actions)) = o else { continue };
                    for act in actions {
                        for aa in &act.attributes {
                            let TcActionAttribute::Options(ao) = aa else { continue };
                            for x in ao {
                                if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = x {
                                    targets.push(p.ifindex);
                                }
                            }
                        }
                    }
                }
            }
            if !targets.is_empty() {
                out.push(Redirect { prio: (f.header.info >> 16) as u16, targets });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_options_round_trip_with_rate64() {
        for rate in [1_000_000u64, 5_000_000_000] {
            let t = Tbf { rate, limit: 12345, buffer: 678 };
            let opts = t.options();
            assert_eq!(opts.len(), if rate > u32::MAX as u64 { 2 } else { 1 });
            assert_eq!(Tbf::parse(&opts), Some(t));
        }
    }

    #[test]
    fn psched_clock_is_readable() {
        assert!(ticks_per_usec().unwrap() > 0.0);
    }
}
