//! Operator commands over the topics, run beside (not inside) the processor:
//! [`group_replay`] moves a stopped consumer group back to a time, [`workspace_replay`] routes
//! one workspace's events of a window again from the command itself, and [`redrive`] sends a
//! workspace's failed and dead deliveries to a retry tier after the connection is fixed.

pub mod group_replay;
pub mod redrive;
pub mod workspace_replay;
