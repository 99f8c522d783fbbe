//! The skiff agent: runs the pods bound to its node through containerd, wires
//! them into the VXLAN overlay and reports heartbeats to the master.
//!
//! The agent is built in the agent issue; this crate holds its place in the
//! workspace layout until then.
