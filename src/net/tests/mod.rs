//! Root tests against the real kernel. Each test works only inside network namespaces it creates
//! (`rcni-net-<test>-<pid>`, removed on drop, also on panic); nothing touches the host namespace.
//! The plugin process would run in a "node" namespace: tests open both node and pod by path.

mod addrs;
mod garp;
mod harness;
/// The test kit's namespace guard, shared with the integration tests and the benchmark.
#[path = "../../../tests/support/netns.rs"]
mod kit;
mod links;
mod neighs;
mod portmap_nft;
mod routes;
mod sysctls;
