//! What leaves the server, and when.
//!
//! - [`durability`]: group commit; nothing that names a seq leaves before its flush (D1).
//! - [`router`]: the seam between the domains and the sessions: "deliver this encoded
//!   frame to this user's devices", "who is online". [`hub::Hub`] is the local router; a
//!   cluster bus would be another.
//! - [`fanout`]: the one place that encodes a message push (once per message and inbox
//!   position) and hands it to the router.
//! - [`hub`]: the sharded registry of live sessions ([`hub::SessionHandle`]).
//! - [`send_queue`]: each session's bounded outbound queue of encoded frames.

pub(crate) mod durability;
pub(crate) mod fanout;
pub(crate) mod hub;
pub(crate) mod router;
pub(crate) mod send_order;
pub(crate) mod send_queue;
