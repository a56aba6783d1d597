//! The delivery seam between the domains and the live sessions.
//!
//! Domains never call the session registry: they hand encoded frames to a [`Router`] and
//! ask it who is online. On one node the [`Hub`](super::hub::Hub) is the router; in a
//! cluster a router would also publish to the nodes holding the user's other sessions.

use bytes::Bytes;

pub trait Router: Send + Sync + 'static {
    /// Queues an encoded frame to every live session of `user`; returns how many took it.
    fn deliver(&self, user: &str, frame: &Bytes) -> usize;
    /// Whether any device of `user` has a live session.
    fn is_online(&self, user: &str) -> bool;
    /// The devices of `user` with a live session, sorted.
    fn online_devices(&self, user: &str) -> Vec<String>;
}
