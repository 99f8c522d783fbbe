//! Kubernetes value formats that the master and the agent both read, with
//! one definition each so that the two sides can never disagree:
//!
//! - [`quantity`]: resource quantities (`500m`, `128Mi`), exact, in
//!   thousandths of a unit;
//! - [`cidr`]: IPv4 networks (`10.42.0.0/16`), host bits refused;
//! - [`time`]: RFC 3339 timestamps as Kubernetes writes them.

pub mod cidr;
pub mod quantity;
pub mod time;

pub use cidr::{CidrError, Ipv4Net};
pub use quantity::{Quantity, QuantityError};
pub use time::{now_rfc3339, rfc3339};
