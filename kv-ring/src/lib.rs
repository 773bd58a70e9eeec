//! Consistent-hash ring with virtual nodes, replica placement and transfer plans.
//!
//! Not built yet: see the project's open issues.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
