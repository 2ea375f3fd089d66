//! The CNI protocol: environment, configuration, results, errors, versions, delegation, runtime side.
