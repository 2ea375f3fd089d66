//! A netlink (NETLINK_ROUTE) handle bound to one network namespace.
//!
//! The socket is created by a thread inside the target namespace (a socket stays in the namespace it was
//! born in), then driven from the caller's tokio runtime. That thread stays with the handle, for later
//! sockets and for the namespace's `/proc/sys/net` files ([`NetHandle::run_in_ns`]). The runtime thread never
//! changes namespace; [`NetHandle::check_runtime_netns`] asserts that in debug builds.
//!
//! All requests go through [`NetHandle::ack`] (change requests) and [`NetHandle::dump`] (listings), so
//! error classification and `NLM_F_DUMP_INTR` handling live in one place.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

use super::error::{NetError, Result};
use super::netns::{Netns, NetnsThread, NsId, current_thread_netns_id};

/// How often a dump is retried when the kernel flags it as interrupted (`NLM_F_DUMP_INTR`: the table
/// changed while we were reading it). Same bound as the Go reference (pkg/netlinksafe).
pub const DUMP_RETRIES: usize = 5;

type Unsolicited = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A netlink route handle bound to a network namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NetHandle {
    inner: rtnetlink::Handle,
    /// The namespace and the thread inside it that made the socket (it ends with the last clone); `None`:
    /// the namespace the handle was created in (the plugin's own, typically the node).
    ns: Option<(Netns, Arc<NetnsThread>)>,
    /// Shown in error contexts, e.g. " (netns /run/netns/pod1)"; empty for the current namespace.
    label: Arc<str>,
    /// Namespace of the runtime thread at creation, for the debug check.
    runtime_ns: NsId,
}

impl NetHandle {
    /// A handle for the calling thread's namespace (where the plugin runs: the node).
    /// Must be called inside a tokio runtime (the connection task is spawned on it).
    pub fn current() -> Result<NetHandle> {
        let runtime_ns = current_thread_netns_id()?;
        let sock = new_socket(0).map_err(|e| NetError::io("create netlink socket", e))?;
        Self::wrap(sock, None, runtime_ns)
    }

    /// A handle whose socket lives in `ns`; usable from the calling (runtime) thread.
    pub fn for_netns(ns: &Netns) -> Result<NetHandle> {
        let runtime_ns = current_thread_netns_id()?;
        let thread = Arc::new(NetnsThread::start(ns)?);
        let sock = socket_on(&thread, ns, 0)?;
        let h = Self::wrap(sock, Some((ns.clone(), thread)), runtime_ns)?;
        h.check_runtime_netns();
        Ok(h)
    }

    fn wrap(sock: netlink_sys::Socket, ns: Option<(Netns, Arc<NetnsThread>)>, runtime_ns: NsId) -> Result<NetHandle> {
        let (conn, handle, _unsolicited) = connect(sock)?;
        tokio::spawn(conn);
        let label: Arc<str> = match &ns {
            Some((ns, _)) => format!(" (netns {})", ns.path().display()).into(),
            None => "".into(),
        };
        Ok(NetHandle { inner: handle, ns, label, runtime_ns })
    }

    /// Run `f` inside this handle's namespace and return what it returns: on the handle's thread there,
    /// or on the calling thread for a handle of the caller's own namespace. For what only a thread in the
    /// namespace can do (open its `/proc/sys/net` files).
    pub fn run_in_ns<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match &self.ns {
            Some((_, t)) => t.run(f),
            None => {
                self.check_runtime_netns();
                Ok(f())
            }
        }
    }

    /// The namespace this handle works in; `None` for the creator's own namespace.
    pub fn netns(&self) -> Option<&Netns> {
        self.ns.as_ref().map(|(ns, _)| ns)
    }

    /// Debug builds: panic if the calling thread is not in the namespace the runtime thread had when
    /// this handle was created, i.e. if something `setns`'d the runtime thread. No-op in release.
    pub fn check_runtime_netns(&self) {
        if cfg!(debug_assertions) {
            let now = current_thread_netns_id().ok();
            debug_assert_eq!(now, Some(self.runtime_ns), "the runtime thread changed network namespace");
        }
    }

    /// `what` + the namespace label, for error contexts.
    pub(crate) fn ctx(&self, what: impl std::fmt::Display) -> String {
        format!("{what}{}", self.label)
    }

    /// Send a change request and wait for the kernel's ACK. `flags` are added to
    /// `NLM_F_REQUEST | NLM_F_ACK` (e.g. `NLM_F_CREATE | NLM_F_EXCL`).
    pub(crate) async fn ack(&self, msg: RouteNetlinkMessage, flags: u16, what: impl std::fmt::Display) -> Result<()> {
        self.ack_echo(msg, flags, what).await.map(|_| ())
    }

    /// Like [`ack`](Self::ack), and also returns the messages the kernel sent back before the ACK: with
    /// `NLM_F_ECHO` in `flags`, the notification of the object as created (Linux >= 6.3 for links; older
    /// kernels send nothing, so callers must cope with an empty list).
    pub(crate) async fn ack_echo(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl std::fmt::Display,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.check_runtime_netns();
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut h = self.inner.clone();
        let mut replies = h.request(req).map_err(|e| NetError::other(self.ctx(&what), e.to_string()))?;
        let mut echoed = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                // An ACK is an Error payload with code 0 (`None`); netlink-proto normally swallows it.
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NetError::from_netlink(self.ctx(&what), &e));
                }
                NetlinkPayload::InnerMessage(m) => echoed.push(m),
                _ => {}
            }
        }
        Ok(echoed)
    }

    /// A non-dump GET (one object by key). `Ok(None)` when the kernel says it does not exist.
    pub(crate) async fn get_one(
        &self,
        msg: RouteNetlinkMessage,
        what: impl std::fmt::Display,
    ) -> Result<Option<RouteNetlinkMessage>> {
        self.check_runtime_netns();
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST;
        let mut h = self.inner.clone();
        let mut replies = h.request(req).map_err(|e| NetError::other(self.ctx(&what), e.to_string()))?;
        let mut found = None;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => found = Some(m),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let err = NetError::from_netlink(self.ctx(&what), &e);
                    return if err.is_not_found() { Ok(None) } else { Err(err) };
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Dump a table. If the kernel marks the dump as interrupted (`NLM_F_DUMP_INTR`, the table changed
    /// mid-dump so the result may be inconsistent), start over, up to [`DUMP_RETRIES`] times; then fail
    /// with EINTR rather than return a torn snapshot. The connection forwards the final `NLMSG_DONE`,
    /// so the flag is seen even when the dump ends with no objects after the change.
    pub(crate) async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        what: impl std::fmt::Display,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.check_runtime_netns();
        for _ in 0..DUMP_RETRIES {
            let mut req = NetlinkMessage::from(msg.clone());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut h = self.inner.clone();
            let mut replies = h.request(req).map_err(|e| NetError::other(self.ctx(&what), e.to_string()))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            while let Some(reply) = replies.next().await {
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NetError::from_netlink(self.ctx(&what), &e));
                    }
                    NetlinkPayload::Overrun(_) => interrupted = true,
                    _ => {}
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetError::from_errno(
            format!("{}: dump still interrupted after {DUMP_RETRIES} attempts", self.ctx(&what)),
            libc::EINTR,
        ))
    }

    /// A socket subscribed to multicast `groups` (bitmask of `1 << (RTNLGRP_x - 1)`) in this handle's
    /// namespace, for event-driven waits. Returns the unsolicited-message stream; the connection task is
    /// spawned and ends when the stream is dropped.
    pub(crate) fn subscribe(&self, groups: u32) -> Result<Unsolicited> {
        let sock = match &self.ns {
            Some((ns, t)) => socket_on(t, ns, groups)?,
            None => new_socket(groups).map_err(|e| NetError::io(self.ctx("create netlink socket"), e))?,
        };
        let (conn, _handle, events) = connect(sock)?;
        tokio::spawn(conn);
        Ok(events)
    }
}

/// Create a NETLINK_ROUTE socket in the calling thread's namespace, with extended ACKs (so errors carry
/// the kernel's explanation) and capped ACKs (so an error does not echo our whole request back).
fn new_socket(groups: u32) -> std::io::Result<netlink_sys::Socket> {
    let mut s = netlink_sys::Socket::new(NETLINK_ROUTE)?;
    // Both are best effort: old kernels lack them, and nothing depends on them but error text.
    let _ = s.set_ext_ack(true);
    let _ = s.set_cap_ack(true);
    if groups != 0 {
        s.bind(&SocketAddr::new(0, groups))?;
    }
    Ok(s)
}

/// Create the socket on `thread`, which is inside `ns`.
fn socket_on(thread: &NetnsThread, ns: &Netns, groups: u32) -> Result<netlink_sys::Socket> {
    thread
        .run(move || new_socket(groups))?
        .map_err(|e| NetError::io(format!("create netlink socket in netns {}", ns.path().display()), e))
}

type Conn = rtnetlink::proto::Connection<RouteNetlinkMessage, TokioSocket>;

fn connect(sock: netlink_sys::Socket) -> Result<(Conn, rtnetlink::Handle, Unsolicited)> {
    // TokioSocket::from_raw_fd registers the fd with the reactor and panics outside a runtime:
    // turn that into an error.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(NetError::other("create netlink handle", "not inside a tokio runtime"));
    }
    // SAFETY: the fd comes from a Socket we own and give up here; TokioSocket takes ownership.
    let tsock = unsafe { TokioSocket::from_raw_fd(sock.into_raw_fd()) };
    let (mut conn, handle, events) = rtnetlink::from_socket(tsock);
    // Forward NLMSG_DONE so `dump` can see NLM_F_DUMP_INTR on it; `ack`/`get_one` ignore it.
    conn.set_forward_done(true);
    Ok((conn, handle, events))
}
