//! The pod's gratuitous ARP: the up request sends none, ours is byte for byte the kernel's, and the detached
//! helper sends it only once the process has gone (or after its bound).
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::harness::{TestNs, require_root};
use crate::net::{AddrOptions, Mac, NetHandle, Netns, VethEnd, VethSpec, detached, garp, sysctl};

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

#[tokio::test]
async fn up_with_arp_notify_is_silent_and_our_frame_is_the_kernels() {
    require_root!();
    let node = TestNs::new("garp1-node");
    let pod = TestNs::new("garp1-pod");
    let ip = Ipv4Addr::new(10, 66, 0, 7);
    let (nh, ph, host, eth0) = pair(&node, &pod, ip).await;
    let cap = arp_capture(&node.ns, host);

    ph.set_up_arp_notify(eth0).await.unwrap();
    assert_eq!(sysctl::read_in(&pod.ns, "net/ipv4/conf/eth0/arp_notify").unwrap(), "1");
    nh.wait_oper_up(host, Duration::from_secs(3)).await.unwrap();
    let at_up = frames(&cap, Instant::now() + Duration::from_millis(300), usize::MAX);
    assert!(at_up.is_empty(), "the up sent ARP: {at_up:02x?}");

    let mac: Mac = POD_MAC.parse().unwrap();
    garp::announce_now(&pod.ns, eth0, mac, &[ip]).unwrap();
    let ours = frames(&cap, Instant::now() + Duration::from_secs(2), 1);
    assert_eq!(ours, vec![garp::frame(mac, ip).to_vec()]);

    // The kernel's own announcement (arp_notify is on: setting the MAC, even to the same value, makes it
    // send one): the same bytes.
    ph.set_mac(eth0, mac).await.unwrap();
    let kernels = frames(&cap, Instant::now() + Duration::from_secs(2), 1);
    assert_eq!(kernels, ours, "our frame differs from the kernel's");
}

#[tokio::test]
// The lock is held across the awaits on purpose: for the whole test, no other helper test may run.
#[allow(clippy::await_holding_lock)]
async fn helper_announces_only_after_the_process_or_its_bound() {
    require_root!();
    let _serial = detached::HELPER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    detached::adopt_helpers().unwrap();
    let node = TestNs::new("garp2-node");
    let pod = TestNs::new("garp2-pod");
    let ip = Ipv4Addr::new(10, 66, 1, 9);
    let (nh, ph, host, eth0) = pair(&node, &pod, ip).await;
    ph.set_up_arp_notify(eth0).await.unwrap();
    nh.wait_oper_up(host, Duration::from_secs(3)).await.unwrap();
    let cap = arp_capture(&node.ns, host);
    let mac: Mac = POD_MAC.parse().unwrap();

    let t = Instant::now();
    let pending = garp::Pending::start(&pod.ns, eth0, mac);
    // Nothing before the addresses are handed over.
    let before = frames(&cap, t + Duration::from_millis(100), usize::MAX);
    assert!(before.is_empty(), "sent before it had the addresses: {before:02x?}");
    pending.announce(&[ip]).unwrap();
    // This process lives on: nothing while it does, until the helper's bound (500 ms).
    let early = frames(&cap, t + Duration::from_millis(300), usize::MAX);
    assert!(early.is_empty(), "sent while the process still runs: {early:02x?}");
    let late = frames(&cap, t + Duration::from_secs(3), 1);
    assert_eq!(late, vec![garp::frame(mac, ip).to_vec()]);
    detached::reap_helpers(true);
}
