//! kv-sim
