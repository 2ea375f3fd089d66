//! The CNI protocol: environment, configuration, results, errors, versions, delegation.
//! Knows nothing of netlink.

pub mod args;
pub mod config;
pub mod decode;
pub mod delegate;
pub mod error;
pub mod log;
pub mod lookup;
pub mod process;
pub mod result;
pub mod runtime;
pub mod serde_util;
pub mod skel;
pub mod version;

pub use error::{CniError, CniResult};
pub use result::AddResult;
