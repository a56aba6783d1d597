//! Conversations: what a conversation is and who is in it.
//!
//! - [`id`]: conversation ids (`d:<a>:<b>` for 1:1, `g:<16 hex>` for groups).
//! - [`state`]: the cache of conversation states (members, last seq, diffusion mode), one
//!   mutex per conversation, loaded from the store on first use and evicted when idle.
//! - [`list`]: the user's conversation list, with unread counts.
//! - [`settings`]: the user's mute and pin of a conversation.
//! - [`view`]: how an entry is served to one reader (expired and deleted-for-me entries
//!   as tombstones), and the unread count.

pub(crate) mod id;
pub(crate) mod list;
pub(crate) mod settings;
pub(crate) mod state;
pub(crate) mod view;

pub(crate) use list::Conversations;
pub(crate) use state::{ConvCache, ConvState};
