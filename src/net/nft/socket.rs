//! The NETLINK_NETFILTER socket: requests and their replies, dumps retried when the kernel flags
//! them interrupted, generation-checked batches.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::codec::*;

/// The reply to one request, read datagram by datagram.
struct Reply {
    seq: u32,
    dump: bool,
    /// The kernel flagged a dump message NLM_F_DUMP_INTR: the listing may miss or repeat objects.
    interrupted: bool,
}

impl Reply {
    /// Feeds one datagram; `Ok(true)` once the reply is complete (final ack, or NLMSG_DONE of a dump).
    fn absorb(&mut self, datagram: &[u8], on_msg: &mut impl FnMut(&Msg<'_>) -> NlResult<()>) -> NlResult<bool> {
        for m in parse_msgs(datagram)? {
            if m.seq != self.seq {
                continue;
            }
            self.interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
            match m.msg_type {
                NLMSG_ERROR => {
                    let code = error_code(m.payload)?;
                    return if code == 0 { Ok(true) } else { Err(NetlinkError::Kernel(code)) };
                }
                NLMSG_DONE if self.dump => return Ok(true),
                _ => on_msg(&m)?,
            }
        }
        Ok(false)
    }

    fn outcome(&self) -> NlResult<()> {
        if self.interrupted { Err(NetlinkError::DumpInterrupted) } else { Ok(()) }
    }
}

/// Runs `dump` again while the kernel reports it interrupted by a concurrent ruleset change, so that
/// a caller never acts on a torn listing.
/// After a few immediate repeats it waits a little longer each time (up to [`MAX_DUMP_BACKOFF`], shifted by
/// the pid so that processes that collided once do not collide again in lockstep): under a burst of
/// concurrent commits a dump only completes in a gap between them.
fn retry_interrupted<T>(mut dump: impl FnMut() -> NlResult<T>) -> NlResult<T> {
    let mut attempts = 1;
    loop {
        match dump() {
            Err(NetlinkError::DumpInterrupted) if attempts < DUMP_ATTEMPTS => {
                if attempts >= IMMEDIATE_DUMP_REPEATS {
                    let jitter = std::time::Duration::from_micros(u64::from(std::process::id() % 997));
                    let step = std::time::Duration::from_millis(attempts as u64);
                    std::thread::sleep(step.min(MAX_DUMP_BACKOFF) + jitter);
                }
                attempts += 1;
            }
            other => return other,
        }
    }
}

/// Interrupted dumps repeated at once before [`retry_interrupted`] starts to back off.
const IMMEDIATE_DUMP_REPEATS: usize = 3;
/// The longest pause between two attempts of an interrupted dump.
const MAX_DUMP_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// An NETLINK_NETFILTER socket in the calling thread's network namespace.
pub struct Nfnl {
    /// Taken only in `drop`.
    sock: std::mem::ManuallyDrop<Socket>,
    seq: u32,
    rbuf: Vec<u8>,
    /// The index in its ops of the change the last failed batch or check failed on.
    failed_op: Option<usize>,
}

/// Set once this process has committed a batch. From then on, releasing any nf_tables socket makes the
/// kernel first finish destroying the committed transactions (`nft_rcv_nl_event` flushes that work, which
/// waits for an RCU grace period: ~5–20 ms). So sockets are not closed after a commit but handed to
/// `net::detached::linger`: a detached helper (DEL) takes them over, or they close at exit — no later than
/// they would have anyway, and the plugin's remaining work does not wait for them.
static COMMITTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Drop for Nfnl {
    fn drop(&mut self) {
        // SAFETY: `sock` is not used again; this is its only take.
        let sock = unsafe { std::mem::ManuallyDrop::take(&mut self.sock) };
        if COMMITTED.load(std::sync::atomic::Ordering::Relaxed) {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the fd comes from into_raw_fd, so it is open and owned by nothing else.
            crate::net::detached::linger(unsafe { std::os::fd::OwnedFd::from_raw_fd(sock.into_raw_fd()) });
        }
    }
}

const RECV_BUF: usize = 64 * 1024;

impl Nfnl {
    pub fn open() -> NlResult<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Io)?;
        sock.bind_auto().map_err(NetlinkError::Io)?;
        // An error answer would otherwise echo the whole request (up to a batch's size) back.
        sock.set_cap_ack(true).map_err(NetlinkError::Io)?;
        let seq =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1)
                | 1;
        Ok(Nfnl { sock: std::mem::ManuallyDrop::new(sock), seq, rbuf: Vec::with_capacity(RECV_BUF), failed_op: None })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n + 1);
        s
    }

    fn send(&self, data: &[u8]) -> NlResult<()> {
        let n = self.sock.send(data, 0).map_err(NetlinkError::Io)?;
        if n != data.len() {
            return Err(NetlinkError::Protocol(format!("short send: {n} of {} bytes", data.len())));
        }
        Ok(())
    }

    /// Receives one datagram into `self.rbuf`; `Ok(false)` on EAGAIN when non-blocking.
    fn recv(&mut self, flags: libc::c_int) -> NlResult<bool> {
        self.rbuf.clear();
        match self.sock.recv(&mut self.rbuf, flags) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(NetlinkError::Io(e)),
        }
    }

    /// Sends one request (already encoded with sequence `seq`) and feeds every reply message of that
    /// sequence to `on_msg` until the final ack / NLMSG_DONE. Kernel errors are returned as `Kernel`;
    /// a dump the kernel marked interrupted as [`NetlinkError::DumpInterrupted`] (after reading it to
    /// its end, so the socket stays in sync).
    fn request(
        &mut self,
        req: &[u8],
        seq: u32,
        dump: bool,
        mut on_msg: impl FnMut(&Msg<'_>) -> NlResult<()>,
    ) -> NlResult<()> {
        self.send(req)?;
        let mut reply = Reply { seq, dump, interrupted: false };
        loop {
            self.recv(0)?;
            let rbuf = std::mem::take(&mut self.rbuf);
            let done = reply.absorb(&rbuf, &mut on_msg);
            self.rbuf = rbuf;
            if done? {
                return reply.outcome();
            }
        }
    }

    /// A batch is one datagram: raise the send buffer when it is larger than the default allows
    /// (SO_SNDBUFFORCE: we hold CAP_NET_ADMIN anyway, and the default cap is wmem_max).
    fn make_room_for(&self, len: usize) -> NlResult<()> {
        const DEFAULT_ROOM: usize = 128 * 1024;
        if len + 4096 <= DEFAULT_ROOM {
            return Ok(());
        }
        let size = libc::c_int::try_from(len + 4096)
            .map_err(|_| NetlinkError::Protocol(format!("a batch of {len} bytes is too large")))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid socket fd and a pointer to an int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NetlinkError::Io(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The current ruleset generation id.
    pub fn generation(&mut self) -> NlResult<u32> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETGEN, NLM_F_ACK, seq, AF_UNSPEC);
        b.end();
        let mut gen_id = None;
        self.request(&b.data, seq, false, |m| {
            if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                gen_id = m
                    .payload
                    .get(NFGENMSG_LEN..)
                    .and_then(|a| attr(a, NFTA_GEN_ID))
                    .and_then(|v| v.try_into().ok())
                    .map(u32::from_be_bytes);
            }
            Ok(())
        })?;
        gen_id.ok_or_else(|| NetlinkError::Protocol("no generation id in reply".into()))
    }

    /// Looks one element up by key. `Ok(None)` if the element, the set or the table does not exist.
    pub fn get_elem(&mut self, family: u8, table: &str, set: &str, key: &[u8]) -> NlResult<Option<SetElem>> {
        self.get_one(family, table, set, key, None, parse_setelem_msg)
    }

    /// All elements of a set; `Ok(None)` if the set or table does not exist.
    pub fn dump_elems(&mut self, family: u8, table: &str, set: &str) -> NlResult<Option<Vec<SetElem>>> {
        retry_interrupted(|| self.dump_once(family, table, set, parse_setelem_msg))
    }

    /// One GETSETELEM dump of `set`, every answer read with `parse`; `Ok(None)` if the set or table does not exist.
    fn dump_once<T>(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        parse: fn(&[u8]) -> NlResult<Vec<T>>,
    ) -> NlResult<Option<Vec<T>>> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETSETELEM, NLM_F_DUMP, seq, family);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        b.end();
        let mut out = Vec::new();
        let r = self.request(&b.data, seq, true, |m| {
            if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                out.extend(parse(m.payload)?);
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(Some(out)),
            Err(NetlinkError::Kernel(ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks one element up with its map data and range end; `key_end` is needed for the ranges of a
    /// concatenated interval set. `Ok(None)` if the element, the set or the table does not exist.
    pub fn get_full(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        key: &[u8],
        key_end: Option<&[u8]>,
    ) -> NlResult<Option<FullElem>> {
        self.get_one(family, table, set, key, key_end, parse_full_elems)
    }

    /// One GETSETELEM request for `key` (and `key_end`), its answer read with `parse`.
    fn get_one<T>(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        key: &[u8],
        key_end: Option<&[u8]>,
        parse: fn(&[u8]) -> NlResult<Vec<T>>,
    ) -> NlResult<Option<T>> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETSETELEM, NLM_F_ACK, seq, family);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        b.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        b.nest_start(NFTA_LIST_ELEM);
        for (ty, v) in [(NFTA_SET_ELEM_KEY, Some(key)), (NFTA_SET_ELEM_KEY_END, key_end)] {
            if let Some(v) = v {
                b.nest_start(ty);
                b.attr(NFTA_DATA_VALUE, v);
                b.nest_end();
            }
        }
        b.nest_end();
        b.nest_end();
        b.end();
        let mut found = None;
        let r = self.request(&b.data, seq, false, |m| {
            if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                found = parse(m.payload)?.into_iter().next();
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(found),
            Err(NetlinkError::Kernel(ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All elements of a set or map with data and range ends; `Ok(None)` if the set or table does not exist.
    pub fn dump_full(&mut self, family: u8, table: &str, set: &str) -> NlResult<Option<Vec<FullElem>>> {
        retry_interrupted(|| self.dump_once(family, table, set, parse_full_elems))
    }

    /// The rules of one chain (empty if the chain or table does not exist).
    pub fn dump_rules(&mut self, family: u8, table: &str, chain: &str) -> NlResult<Vec<RuleInfo>> {
        retry_interrupted(|| self.dump_rules_once(family, table, Some(chain)))
    }

    /// The rules of every chain of a table, in chain and rule order (empty if the table does not exist).
    pub fn dump_table_rules(&mut self, family: u8, table: &str) -> NlResult<Vec<RuleInfo>> {
        retry_interrupted(|| self.dump_rules_once(family, table, None))
    }

    /// The chains of a table; `None` if the table does not exist.
    pub fn dump_chains(&mut self, family: u8, table: &str) -> NlResult<Option<Vec<ChainInfo>>> {
        if !self.table_exists(family, table)? {
            return Ok(None);
        }
        retry_interrupted(|| {
            let seq = self.next_seq(0);
            let mut b = MsgBuf::default();
            b.begin_nft(NFT_MSG_GETCHAIN, NLM_F_DUMP, seq, family);
            b.attr_str(NFTA_CHAIN_TABLE, table);
            b.end();
            let mut out = Vec::new();
            self.request(&b.data, seq, true, |m| {
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN {
                    let (t, c) = parse_chain_msg(m.payload)?;
                    // Older kernels ignore the table filter of a chain dump.
                    if t == table {
                        out.push(c);
                    }
                }
                Ok(())
            })?;
            Ok(Some(out))
        })
    }

    /// Every chain of every table of `family`, with its table's name.
    pub fn dump_all_chains(&mut self, family: u8) -> NlResult<Vec<(String, ChainInfo)>> {
        retry_interrupted(|| {
            let seq = self.next_seq(0);
            let mut b = MsgBuf::default();
            b.begin_nft(NFT_MSG_GETCHAIN, NLM_F_DUMP, seq, family);
            b.end();
            let mut out = Vec::new();
            self.request(&b.data, seq, true, |m| {
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN {
                    out.push(parse_chain_msg(m.payload)?);
                }
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// Whether `family table` exists.
    pub fn table_exists(&mut self, family: u8, table: &str) -> NlResult<bool> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETTABLE, NLM_F_ACK, seq, family);
        b.attr_str(NFTA_TABLE_NAME, table);
        b.end();
        match self.request(&b.data, seq, false, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(NetlinkError::Kernel(ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn dump_rules_once(&mut self, family: u8, table: &str, chain: Option<&str>) -> NlResult<Vec<RuleInfo>> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETRULE, NLM_F_DUMP, seq, family);
        b.attr_str(NFTA_RULE_TABLE, table);
        if let Some(chain) = chain {
            b.attr_str(NFTA_RULE_CHAIN, chain);
        }
        b.end();
        let mut out = Vec::new();
        let r = self.request(&b.data, seq, true, |m| {
            if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
                out.push(parse_rule_msg(m.payload)?);
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(out),
            Err(NetlinkError::Kernel(ENOENT)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Whether `chain` exists in `family table`.
    pub fn chain_exists(&mut self, family: u8, table: &str, chain: &str) -> NlResult<bool> {
        let seq = self.next_seq(0);
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETCHAIN, NLM_F_ACK, seq, family);
        b.attr_str(NFTA_CHAIN_TABLE, table);
        b.attr_str(NFTA_CHAIN_NAME, chain);
        b.end();
        match self.request(&b.data, seq, false, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(NetlinkError::Kernel(ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies `ops` atomically; with `genid`, only if the ruleset is still at that generation
    /// (otherwise `Kernel(ERESTART)`). The first kernel error of the batch is returned.
    pub fn batch(&mut self, genid: Option<u32>, family: u8, table: &str, ops: &[BatchOp<'_>]) -> NlResult<()> {
        self.transaction(genid, family, table, ops, true)
    }

    /// The index in `ops` of the change the last failed [`Nfnl::batch`] or [`Nfnl::check`] failed on,
    /// when the kernel named one.
    pub fn failed_op(&self) -> Option<usize> {
        self.failed_op
    }

    /// Whether the kernel would apply `ops` now, without applying them: the batch is sent without its
    /// end, so the kernel checks every change and aborts (as `nft --check`). The first error is returned.
    pub fn check(&mut self, family: u8, table: &str, ops: &[BatchOp<'_>]) -> NlResult<()> {
        self.transaction(None, family, table, ops, false)
    }

    fn transaction(
        &mut self,
        genid: Option<u32>,
        family: u8,
        table: &str,
        ops: &[BatchOp<'_>],
        commit: bool,
    ) -> NlResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let seq = self.seq;
        let mut b = MsgBuf::default();
        let op_of_message = encode_transaction(&mut b, seq, genid, family, table, ops, commit);
        let expected = op_of_message.len();
        self.failed_op = None;
        self.seq = seq.wrapping_add(expected as u32 + 2);
        let data = b.finish()?;
        self.make_room_for(data.len())?;
        self.send(data)?;
        // The kernel processes the batch synchronously inside sendmsg, so every answer is queued by now.
        let (mut acks, mut first_err) = (0, None);
        while self.recv(libc::MSG_DONTWAIT)? {
            for m in parse_msgs(&self.rbuf)? {
                if m.msg_type != NLMSG_ERROR || m.seq < seq || m.seq > seq + expected as u32 + 1 {
                    continue;
                }
                match error_code(m.payload)? {
                    0 => acks += 1,
                    e => {
                        if first_err.is_none() {
                            first_err = Some(e);
                            let message = m.seq.wrapping_sub(seq).checked_sub(1);
                            self.failed_op = message.and_then(|i| op_of_message.get(i as usize).copied());
                        }
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(NetlinkError::Kernel(e));
        }
        if acks != expected {
            return Err(NetlinkError::Protocol(format!("batch of {expected} changes: only {acks} acknowledged")));
        }
        if commit {
            COMMITTED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nft_msg(msg_type: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut b = MsgBuf::default();
        b.begin(msg_type, flags, seq, NFPROTO_INET, 0);
        b.end();
        b.data
    }

    /// Audit finding 17: a dump the kernel marks NLM_F_DUMP_INTR is reported, not taken as complete.
    #[test]
    fn an_interrupted_dump_is_reported_and_retried() {
        let mut datagram = nft_msg((10 << 8) | NFT_MSG_NEWSETELEM, NLM_F_DUMP_INTR, 5);
        datagram.extend(nft_msg(NLMSG_DONE, 0, 5));
        let mut reply = Reply { seq: 5, dump: true, interrupted: false };
        let mut seen = 0;
        assert!(
            reply
                .absorb(&datagram, &mut |_| {
                    seen += 1;
                    Ok(())
                })
                .unwrap()
        );
        assert_eq!(seen, 1);
        assert!(matches!(reply.outcome(), Err(NetlinkError::DumpInterrupted)));

        let clean = [nft_msg((10 << 8) | NFT_MSG_NEWSETELEM, 0, 6), nft_msg(NLMSG_DONE, 0, 6)].concat();
        let mut reply = Reply { seq: 6, dump: true, interrupted: false };
        assert!(reply.absorb(&clean, &mut |_| Ok(())).unwrap());
        reply.outcome().unwrap();

        let mut calls = 0;
        let r = retry_interrupted(|| {
            calls += 1;
            if calls < 3 { Err(NetlinkError::DumpInterrupted) } else { Ok(calls) }
        });
        assert_eq!(r.unwrap(), 3);
        let r: NlResult<()> = retry_interrupted(|| Err(NetlinkError::DumpInterrupted));
        assert!(matches!(r, Err(NetlinkError::DumpInterrupted)));
    }
}
