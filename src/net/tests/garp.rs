//! The pod's gratuitous ARP: the up request sends none, and `garp::announce` makes the kernel send one per
//! IPv4 address of the interface.
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::harness::{TestNs, require_root};
use crate::net::{AddrOptions, Mac, NetHandle, Netns, VethEnd, VethSpec, garp, sysctl};

const POD_MAC: &str = "02:00:00:00:30:07";

/// A packet socket in `ns` receiving the ARP frames that arrive on link `ifindex` (non-blocking).
fn arp_capture(ns: &Netns, ifindex: u32) -> OwnedFd {
    ns.run(move || {
        // SAFETY: plain syscalls; the fd is owned by the returned OwnedFd.
        unsafe {
            let proto = 0x0806u16.to_be();
            let fd =
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto as i32);
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), len), 0);
            OwnedFd::from_raw_fd(fd)
        }
    })
    .unwrap()
}

/// The frames received until `until` (polling every 5 ms), or until `stop_after` of them arrived.
fn frames(fd: &OwnedFd, until: Instant, stop_after: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while Instant::now() < until && out.len() < stop_after {
        let mut buf = [0u8; 256];
        // SAFETY: recv into a local buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    out
}

/// Node + pod joined by a veth (host end up, pod's eth0 down with `ip`); returns handles and indexes.
async fn pair(node: &TestNs, pod: &TestNs, ip: Ipv4Addr) -> (NetHandle, NetHandle, u32, u32) {
    let nh = node.handle();
    let ph = pod.handle();
    let host = nh
        .create_veth(&VethSpec {
            host: VethEnd { name: "vh0".into(), ..Default::default() },
            host_up: true,
            host_master: None,
            peer: VethEnd { name: "eth0".into(), mac: Some(POD_MAC.parse().unwrap()), ..Default::default() },
            peer_ns: &pod.ns,
        })
        .await
        .unwrap();
    let eth0 = ph.require_link("eth0").await.unwrap();
    ph.add_address(eth0.index, format!("{ip}/24").parse().unwrap(), AddrOptions::default()).await.unwrap();
    (nh, ph, host.index, eth0.index)
}

/// The kernel's gratuitous ARP for `ip` from `mac` (`inetdev_send_gratuitous_arp`): broadcast, ARP request,
/// sender = target = `ip`, target MAC zero.
fn announcement(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac.0);
    f.extend([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend(mac.0);
    f.extend(ip.octets());
    f.extend([0; 6]);
    f.extend(ip.octets());
    f
}

#[tokio::test]
async fn up_with_arp_notify_is_silent_and_announce_sends_one_frame_per_ipv4_address() {
    require_root!();
    let node = TestNs::new("garp1-node");
    let pod = TestNs::new("garp1-pod");
    let (ip, ip2) = (Ipv4Addr::new(10, 66, 0, 7), Ipv4Addr::new(10, 67, 0, 7));
    let (nh, ph, host, eth0) = pair(&node, &pod, ip).await;
    ph.add_address(eth0, format!("{ip2}/24").parse().unwrap(), AddrOptions::default()).await.unwrap();
    ph.add_address(eth0, "fd66::7/64".parse().unwrap(), AddrOptions { nodad: true, ..Default::default() })
        .await
        .unwrap();
    let cap = arp_capture(&node.ns, host);

    ph.set_up_arp_notify(eth0).await.unwrap();
    assert_eq!(sysctl::read_in(&pod.ns, "net/ipv4/conf/eth0/arp_notify").unwrap(), "1");
    nh.wait_oper_up(host, Duration::from_secs(3)).await.unwrap();
    let at_up = frames(&cap, Instant::now() + Duration::from_millis(300), usize::MAX);
    assert!(at_up.is_empty(), "the up sent ARP: {at_up:02x?}");

    let mac: Mac = POD_MAC.parse().unwrap();
    garp::announce(&ph, eth0, mac).await.unwrap();
    let mut sent = frames(&cap, Instant::now() + Duration::from_secs(2), 3);
    sent.sort();
    let mut expected = vec![announcement(mac, ip), announcement(mac, ip2)];
    expected.sort();
    assert_eq!(sent, expected, "one announcement per IPv4 address, nothing else");
    let eth0_now = ph.require_link("eth0").await.unwrap();
    assert_eq!(eth0_now.mac, Some(mac), "the MAC is unchanged");
    assert!(eth0_now.is_oper_up(), "eth0 stays up");
}
