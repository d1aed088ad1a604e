//! Hosts of their own for a test (ferry-verify's `NetLab`, which `ferry
//! verify` uses for its partition faults): one network namespace per
//! broker, so a link can really be cut. Needs root, as CI has.

pub use ferry_verify::netlab::NetLab;
