//! Operator commands over the topics, run beside (not inside) the processor:
//! [`group_replay`] moves a stopped consumer group back to a time, [`workspace_replay`] routes
//! one workspace's events of a window again from the command itself, [`redrive`] sends a
//! workspace's failed and dead deliveries to a retry tier after the connection is fixed, and
//! [`replay_delivery`] makes a new attempt at one delivery now, whatever its state. The API
//! runs them too, inside the server.

pub mod group_replay;
pub mod redrive;
pub mod replay_delivery;
pub mod workspace_replay;
