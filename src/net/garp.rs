//! A pod's gratuitous ARP, sent by the kernel once the bridge forwards from the pod's port.
//!
//! With `arp_notify` set, the kernel announces every IPv4 address of an interface when it comes up: one ARP
//! request per address, sender and target both the address, from the interface's MAC to broadcast. At the
//! up that frame is lost now and then: the host end's carrier comes with the up, and the bridge only
//! forwards from that port once the link-watch work has run, after the frame arrived (tests/killmatrix.rs).
//!
//! So the pod's interface is brought up in the same request that sets `arp_notify` (the kernel applies the
//! flags before `IFLA_AF_SPEC`, so the up sends nothing; [`NetHandle::set_up_arp_notify`]), and once the ADD
//! has seen the port up, [`announce`] sets the interface's MAC to the one it has: with `arp_notify` on, that
//! change (`NETDEV_CHANGEADDR`) makes the kernel send the same announcement, for every IPv4 address of the
//! interface. Later address changes announce themselves through `arp_notify` as usual.
//!
//! The frame is flooded to every bridge port and received by every pod in softirq within that request,
//! under the rtnl lock, so its cost grows with the pods on the bridge. Sending the frames from a packet
//! socket in a helper forked during the ADD kept the flood off the ADD's path but cost more than it saved:
//! every page the plugin wrote after the fork was copied, the helper's exit and the socket's close (an RCU
//! grace period, `packet_release`) took CPU from the next ADD, and where no helper could run, the in-line
//! close made the ADD wait for that grace period. Figures in bench/RESULTS.md.
//!
//! [`NetHandle::set_up_arp_notify`]: super::NetHandle::set_up_arp_notify

use super::NetHandle;
use super::error::Result;
use super::mac::Mac;

/// The kernel's announcement of every IPv4 address of link `ifindex` (MAC `mac`, `arp_notify` on) in the
/// namespace of `handle`: the MAC set to the one it has.
pub async fn announce(handle: &NetHandle, ifindex: u32, mac: Mac) -> Result<()> {
    handle.set_mac(ifindex, mac).await
}
