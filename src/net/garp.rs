//! A pod's gratuitous ARP, sent once the plugin has answered.
//!
//! With `arp_notify` set, the kernel announces every IPv4 address of an interface when it comes up: one ARP
//! request per address, sender and target both the address, from the interface's MAC to broadcast. On a
//! bridge that frame is flooded to every port and received by every pod, all in softirq inside the
//! RTM_SETLINK that brought the interface up — under the rtnl lock, on the ADD's critical path, and growing
//! with the number of pods (bench/RESULTS.md). Nothing in the ADD needs the neighbours to have heard it.
//!
//! So the pod's interface is brought up in the same request that sets `arp_notify` (the kernel applies the
//! flags before `IFLA_AF_SPEC`, so the up sends nothing; [`NetHandle::set_up_arp_notify`]), and the very same
//! frames ([`frame`]) leave the same interface through a packet socket: from a detached helper that waits
//! until the plugin process has exited ([`Pending`]), or in-line when no helper can run ([`announce_now`]).
//! A packet socket takes no rtnl lock; the flood then costs the helper's CPU, not the ADD's wall time.
//! The in-line send costs the ADD a few milliseconds (the socket's close waits for an RCU grace period,
//! `packet_release`), but letting the kernel announce at the up instead loses the frame now and then: the
//! host end's carrier comes with the up, and the bridge only forwards from that port once the link-watch
//! work has run, after the frame arrived (tests/killmatrix.rs, the runner that does not reap). Both sends
//! come after the ADD saw the port up.
//! Later address changes still announce themselves through `arp_notify`, as before.
//!
//! [`NetHandle::set_up_arp_notify`]: super::NetHandle::set_up_arp_notify

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use super::detached;
use super::error::{NetError, Result};
use super::mac::Mac;
use super::netns::Netns;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;

/// Ethernet header + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 14 + 28;

/// The longest a helper waits for the plugin to exit before it announces anyway (a long-lived process that
/// runs ADDs in-process, e.g. a test): well within what a neighbour's stale entry tolerates.
const EXIT_WAIT: Duration = Duration::from_millis(500);

/// Write ends of the pipes whose closing tells each helper the plugin has exited; held for the rest of the
/// process, so they close only when it exits (or the helper's own wait ends it).
static EXIT_PIPES: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// A bound for long-lived users of the library: past it, a helper announces at once.
const MAX_EXIT_PIPES: usize = 64;

/// The kernel's gratuitous ARP for `ip` on an interface with `mac` (what `arp_notify` makes it send,
/// `inetdev_send_gratuitous_arp`): broadcast, ARP request, sender = target = `ip`, target MAC zero.
pub fn frame(mac: Mac, ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    // 32..38: target MAC, zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Send the announcements of `ips` on link `ifindex` of `ns` now, from a thread inside `ns`.
pub fn announce_now(ns: &Netns, ifindex: u32, mac: Mac, ips: &[Ipv4Addr]) -> Result<()> {
    let frames: Vec<[u8; FRAME_LEN]> = ips.iter().map(|ip| frame(mac, *ip)).collect();
    ns.run(|| {
        // SAFETY: plain syscalls on an fd owned here.
        unsafe {
            let sock = packet_socket();
            if sock < 0 {
                return Err(io::Error::last_os_error());
            }
            let sock = OwnedFd::from_raw_fd(sock);
            for f in &frames {
                if send_frame(sock.as_raw_fd(), ifindex as i32, f) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        }
    })?
    .map_err(|e| NetError::io(format!("send gratuitous ARP on link #{ifindex} in {}", ns.path().display()), e))
}

/// The most addresses one announcement carries (a pod has one or two IPv4 addresses; more are announced
/// in-line).
const MAX_ADDRS: usize = 16;

/// A helper started ahead of the announcement: forked while the ADD still waits for its addresses (IPAM),
/// so neither the fork nor the helper's start-up sits on the ADD's path; it is handed the addresses at the
/// end ([`Pending::announce`]). Dropped without that (the ADD failed), the helper exits without a word.
pub struct Pending {
    ns: Netns,
    ifindex: u32,
    mac: Mac,
    /// The write end of the helper's pipe; `None`: no helper (none could start), announce in-line.
    pipe: Option<OwnedFd>,
}

impl Pending {
    /// Start the helper for link `ifindex` (MAC `mac`) of `ns`. Never fails: without a helper (fork failed,
    /// or nothing would reap it, see `detached::spawn`) the announcement is made in-line later.
    pub fn start(ns: &Netns, ifindex: u32, mac: Mac) -> Pending {
        let mut p = Pending { ns: ns.clone(), ifindex, mac, pipe: None };
        let mut ends = [0i32; 2];
        // SAFETY: pipe2 into a local array.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return p;
        }
        // SAFETY: both fds were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        let (read_fd, netns_fd) = (read.as_raw_fd(), ns.raw_fd());
        // SAFETY (the job): syscalls only, on fds the helper kept, and memory it copied at the fork.
        let job = || unsafe { helper(read_fd, netns_fd, ifindex as i32, mac) };
        if detached::spawn(&[read_fd, netns_fd], &job).is_ok() {
            p.pipe = Some(write);
        }
        p
    }

    /// Announce `ips`: the helper sends once this process has exited — its answer is written by then — or
    /// [`EXIT_WAIT`] after this call if it lives on; without a helper, now ([`announce_now`]).
    pub fn announce(mut self, ips: &[Ipv4Addr]) -> Result<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let Some(pipe) = self.pipe.take().filter(|_| ips.len() <= MAX_ADDRS) else {
            return announce_now(&self.ns, self.ifindex, self.mac, ips);
        };
        let bytes: Vec<u8> = ips.iter().flat_map(|ip| ip.octets()).collect();
        // At most 64 bytes into an empty pipe: one write, never partial (PIPE_BUF).
        // SAFETY: write from a local buffer to an fd we own.
        if unsafe { libc::write(pipe.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) } != bytes.len() as isize {
            drop(pipe);
            return announce_now(&self.ns, self.ifindex, self.mac, ips);
        }
        // Kept open until this process exits: its closing is the helper's signal.
        let mut pipes = EXIT_PIPES.lock().unwrap_or_else(|p| p.into_inner());
        if pipes.len() < MAX_EXIT_PIPES {
            pipes.push(pipe);
        }
        Ok(())
    }
}

/// The helper: read the addresses, wait for the end of the pipe (every write end closed: the plugin exited)
/// or [`EXIT_WAIT`] after the addresses came, then join the pod's namespace and send. Nothing when the pipe
/// ends without addresses (the ADD failed).
unsafe fn helper(fd: RawFd, netns_fd: RawFd, ifindex: i32, mac: Mac) {
    unsafe {
        let mut buf = [0u8; 4 * MAX_ADDRS];
        let mut len = 0usize;
        loop {
            // Until the addresses come, the watchdog of `detached::spawn` is the only bound.
            let timeout = if len == 0 { -1 } else { EXIT_WAIT.as_millis() as i32 };
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ready = libc::poll(&mut p, 1, timeout);
            if ready == 0 {
                break;
            }
            if ready < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                return;
            }
            if len == buf.len() {
                break;
            }
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n == 0 {
                break;
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                return;
            }
            len += n as usize;
        }
        libc::close(fd);
        if len < 4 {
            return;
        }
        let joined = libc::setns(netns_fd, libc::CLONE_NEWNET) == 0;
        libc::close(netns_fd);
        if !joined {
            return;
        }
        let sock = packet_socket();
        if sock < 0 {
            return;
        }
        for a in buf[..len - len % 4].chunks_exact(4) {
            send_frame(sock, ifindex, &frame(mac, Ipv4Addr::new(a[0], a[1], a[2], a[3])));
        }
        libc::close(sock);
    }
}

/// A packet socket that only sends (protocol 0: it receives nothing).
unsafe fn packet_socket() -> RawFd {
    unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) }
}

/// One complete frame (header included) out of link `ifindex`. Returns what `sendto` returns.
unsafe fn send_frame(sock: RawFd, ifindex: i32, f: &[u8; FRAME_LEN]) -> isize {
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        libc::sendto(
            sock,
            f.as_ptr().cast(),
            f.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_an_arp_request_for_the_address_itself() {
        let mac = Mac([0x02, 0x42, 0x0a, 0x58, 0x00, 0x07]);
        let f = frame(mac, Ipv4Addr::new(10, 88, 0, 7));
        let expected: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x07, 0x08, 0x06, // ethernet
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // ether/IPv4, request
            0x02, 0x42, 0x0a, 0x58, 0x00, 0x07, 10, 88, 0, 7, // sender
            0, 0, 0, 0, 0, 0, 10, 88, 0, 7, // target
        ];
        assert_eq!(f, expected);
    }
}
