//! Conversations: what a conversation is and who is in it.
//!
//! - [`id`]: conversation ids (`d:<a>:<b>` for 1:1, `g:<16 hex>` for groups).
//! - [`state`]: the cache of conversation states (members, last seq, diffusion mode), one
//!   mutex per conversation, loaded from the store on first use and evicted when idle.
//! - [`list`]: the user's conversation list.

pub mod id;
pub mod list;
pub mod state;

pub use id::{parse_conversation, ConvId};
pub use list::Conversations;
pub use state::{ConvCache, ConvState};
