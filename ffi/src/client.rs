//! [`TernClient`]: the SDK's [`Client`] behind a uniffi object, plus the one-off
//! [`register`] and [`login`]. Every method takes `&self` (the object is shared as an
//! `Arc` by the foreign side), so any number of threads may call it at once; each call
//! runs on the binding's runtime (`runtime.rs`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tern_sdk::{
    Client, ClientConfig, ConnectOptions, Credentials, FileStore, MemoryStore, SearchOptions,
    SqliteStore, StateStore, Target, TransportMode, Trust,
};
use tokio::sync::watch;

use crate::error::invalid;
use crate::events::{start_delivery, EventListener, Unconfirmed};
use crate::runtime::{on_runtime, runtime};
use crate::types::*;
use crate::FfiError;

/// One user on one device, connected (and reconnecting) in the background.
#[derive(uniffi::Object)]
pub struct TernClient {
    pub(crate) client: Client,
    listener_failures: Arc<AtomicU64>,
    /// Confirm mode `Listener`: what the listener has had, not confirmed yet.
    unconfirmed: Option<Unconfirmed>,
    name: String,
    /// True once the listener thread has ended (see `close`).
    delivery_finished: watch::Receiver<bool>,
    delivery_thread: std::thread::ThreadId,
    /// `sqlite_state`: the database, and a second connection to read it (opened lazily).
    local: Option<(String, Mutex<Option<SqliteStore>>)>,
}

/// How long `close()` waits for the listener to take the last events.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn resolve(addr: &str) -> Result<SocketAddr, FfiError> {
    addr.to_socket_addrs()
        .map_err(|e| invalid(format!("server address {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("server address {addr:?} resolves to nothing")))
}

fn trust(ca_cert_path: &str) -> Result<Trust, FfiError> {
    Trust::from_pem_file(Path::new(ca_cert_path)).map_err(invalid)
}

#[uniffi::export]
impl TernClient {
    /// Starts the client: it connects, logs in (or resumes with the saved token), syncs
    /// and reconnects by itself, reporting to `listener`. Returns at once; errors here are
    /// only about the options (address, CA file).
    #[uniffi::constructor]
    pub fn new(
        options: ClientOptions,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Self>, FfiError> {
        let server = resolve(&options.server)?;
        let quic_server = options.quic_server.as_deref().map(resolve).transpose()?;
        let trust = trust(&options.ca_cert_path)?;
        if options.username.is_empty() {
            return Err(invalid("username is empty"));
        }
        let confirm = options.confirm.unwrap_or(FfiConfirmMode::Listener);
        let store: Box<dyn StateStore> = match (&options.state_path, options.sqlite_state) {
            (Some(p), true) => {
                Box::new(SqliteStore::open(p).map_err(|e| invalid(format!("state file {p}: {e}")))?)
            }
            (Some(p), false) => Box::new(FileStore::new(p)),
            (None, true) => return Err(invalid("sqlite_state needs a state_path")),
            (None, false) => Box::new(MemoryStore::default()),
        };
        if confirm == FfiConfirmMode::Store && !options.sqlite_state {
            return Err(invalid(
                "confirm mode Store needs sqlite_state (a store that keeps messages)",
            ));
        }
        let credentials = Credentials {
            username: options.username.clone(),
            password: options.password.clone(),
            device: options.device.clone(),
        };
        let mut config = ClientConfig::new(server, trust, credentials, store);
        config.quic_server = quic_server;
        config.server_name = options.server_name.clone();
        config.transport = options
            .transport
            .map(TransportMode::from)
            .unwrap_or(TransportMode::Auto);
        config.receive = options.receive;
        config.confirm = confirm.into();
        let (client, events) = {
            let _rt = runtime().enter();
            Client::start(config)
        };
        let queue = match options.event_queue {
            0 => 1024,
            n => n as usize,
        };
        let name = format!("{}/{}", options.username, options.device);
        let confirmer = (confirm == FfiConfirmMode::Listener).then(|| client.clone());
        let confirms = confirmer.is_some();
        let delivery =
            start_delivery(events, listener, queue, name.clone(), confirmer).map_err(|e| {
                FfiError::Internal {
                    detail: format!("cannot start the event thread: {e}"),
                }
            })?;
        Ok(Arc::new(TernClient {
            client,
            listener_failures: delivery.failures,
            unconfirmed: confirms.then_some(delivery.unconfirmed),
            name,
            delivery_finished: delivery.finished,
            delivery_thread: delivery.thread,
            local: match (options.sqlite_state, options.state_path) {
                (true, Some(path)) => Some((path, Mutex::new(None))),
                _ => None,
            },
        }))
    }

    pub fn username(&self) -> String {
        self.client.username().to_string()
    }

    pub fn device(&self) -> String {
        self.client.device().to_string()
    }

    /// How many `on_event` calls threw or panicked so far (each was caught; delivery went on).
    pub fn listener_failures(&self) -> u64 {
        self.listener_failures.load(Ordering::Relaxed)
    }

    /// With confirm mode `App`: the app has processed every message of `conversation` up
    /// to `seq` (cumulative). Returns once the cursors this allows are saved; a message
    /// confirmed is not delivered again after a crash. A no-op in the other modes.
    pub async fn confirm(&self, conversation: String, seq: u64) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.confirm(&conversation, seq).await?) }).await
    }

    /// Up to `limit` messages of `conversation` below seq `before` (0 = the newest),
    /// oldest first, from the device's local copy (`sqlite_state`): works offline, shows
    /// what this device has received and confirmed. A quick local read (no network).
    pub fn local_history(
        &self,
        conversation: String,
        before: u64,
        limit: u32,
    ) -> Result<Vec<FfiMessage>, FfiError> {
        self.with_local(|store| store.history(&conversation, before, limit as usize))
            .map(|messages| messages.into_iter().map(Into::into).collect())
    }

    /// The conversations of the device's local copy (`sqlite_state`), most recent first.
    pub fn local_conversations(&self) -> Result<Vec<FfiStoredConversation>, FfiError> {
        self.with_local(|store| store.conversations())
            .map(|list| list.into_iter().map(Into::into).collect())
    }

    /// Queues a message and returns its client_msg_id at once. The SDK sends it (again
    /// after reconnects, with the same id, so it is stored once) until the server acks:
    /// the outcome arrives as an `Acked`, `SendFailed` or `SendExpired` event.
    pub async fn send(
        &self,
        target: FfiTarget,
        body: Vec<u8>,
        options: FfiSendOptions,
    ) -> Result<String, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let ticket = client
                .send_with_options(Target::from(target), Bytes::from(body), options.into())
                .await?;
            Ok(ticket.client_msg_id.clone())
        })
        .await
    }

    /// Sends a text message and waits for its durable ack (across reconnects).
    pub async fn send_text(&self, target: FfiTarget, text: String) -> Result<FfiSendAck, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.send_text(target.into(), &text).await?.into()) }).await
    }

    /// [`TernClient::send`] and wait for the ack.
    pub async fn send_and_wait(
        &self,
        target: FfiTarget,
        body: Vec<u8>,
        options: FfiSendOptions,
    ) -> Result<FfiSendAck, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let ticket = client
                .send_with_options(Target::from(target), Bytes::from(body), options.into())
                .await?;
            Ok(ticket.await?.into())
        })
        .await
    }

    /// A page of `conversation`'s history: up to `limit` messages before seq `before`
    /// (0 = the newest), in ascending order.
    pub async fn history(
        &self,
        conversation: String,
        before: u64,
        limit: u32,
    ) -> Result<FfiHistoryPage, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.history(&conversation, before, limit).await?.into()) })
            .await
    }

    /// Full-text search of this user's history ("" conversation = all of them).
    pub async fn search(
        &self,
        query: String,
        conversation: String,
        limit: u32,
    ) -> Result<Vec<FfiMessage>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let options = SearchOptions {
                conversation,
                limit,
                ..Default::default()
            };
            let result = client.search(&query, options).await?;
            Ok(result.messages.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// One page of the conversation list: pinned first, then the most recent.
    pub async fn conversations(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<FfiConversationList, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.conversation_list(limit, offset).await?.into()) }).await
    }

    /// Marks `conversation` read up to `seq` (0 = its last message).
    pub async fn mark_read(
        &self,
        conversation: String,
        seq: u64,
    ) -> Result<FfiReadState, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.mark_read(&conversation, seq).await?.into()) }).await
    }

    pub async fn typing(&self, conversation: String, typing: bool) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.typing(&conversation, typing).await?) }).await
    }

    pub async fn mute(
        &self,
        conversation: String,
        muted: bool,
    ) -> Result<FfiConversationSettings, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.mute(&conversation, muted).await?.into()) }).await
    }

    pub async fn pin(
        &self,
        conversation: String,
        pinned: bool,
    ) -> Result<FfiConversationSettings, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.pin(&conversation, pinned).await?.into()) }).await
    }

    /// Replaces the text of this user's message `seq` (within the server's edit window).
    pub async fn edit(
        &self,
        conversation: String,
        seq: u64,
        text: String,
    ) -> Result<FfiSendAck, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.edit(&conversation, seq, &text).await?.into()) }).await
    }

    pub async fn recall(&self, conversation: String, seq: u64) -> Result<FfiSendAck, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.recall(&conversation, seq).await?.into()) }).await
    }

    pub async fn delete_for_me(&self, conversation: String, seq: u64) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.delete_for_me(&conversation, seq).await?) }).await
    }

    /// Creates a group with this user as owner and `members` as members.
    pub async fn create_group(
        &self,
        name: String,
        members: Vec<String>,
    ) -> Result<FfiGroupCreated, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let g = client.create_group(&name, &members).await?;
            Ok(FfiGroupCreated {
                conversation: g.conversation,
                seq: g.seq,
            })
        })
        .await
    }

    pub async fn add_members(
        &self,
        conversation: String,
        users: Vec<String>,
        role: FfiRole,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .add_members(&conversation, &users, role.into())
                .await?)
        })
        .await
    }

    pub async fn remove_members(
        &self,
        conversation: String,
        users: Vec<String>,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.remove_members(&conversation, &users).await?) }).await
    }

    pub async fn leave_group(&self, conversation: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.leave_group(&conversation).await?) }).await
    }

    pub async fn members(&self, conversation: String) -> Result<Vec<FfiMember>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .members(&conversation)
                .await?
                .into_iter()
                .map(crate::types::member)
                .collect())
        })
        .await
    }

    /// The owner makes member `user` a `Member` or an `Admin`.
    pub async fn set_member_role(
        &self,
        conversation: String,
        user: String,
        role: FfiRole,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .set_member_role(&conversation, &user, role.into())
                .await?)
        })
        .await
    }

    /// The owner hands the group to member `user` and becomes an admin.
    pub async fn transfer_ownership(
        &self,
        conversation: String,
        user: String,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.transfer_ownership(&conversation, &user).await?) }).await
    }

    /// The owner or an admin changes the group's name, topic, mute-all, member cap or
    /// history visibility (`None` fields keep their value).
    pub async fn update_group(
        &self,
        conversation: String,
        update: FfiGroupUpdate,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.update_group(update.into_pb(conversation)).await?) })
            .await
    }

    /// The owner dissolves the group: nobody is a member afterwards.
    pub async fn dissolve_group(&self, conversation: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.dissolve_group(&conversation).await?) }).await
    }

    /// Creates a public channel (listed in the directory, joined by users themselves) with
    /// this user as owner; `broadcast_only`: only the owner and admins post.
    pub async fn create_channel(
        &self,
        name: String,
        broadcast_only: bool,
    ) -> Result<FfiGroupCreated, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let g = client.create_channel(&name, broadcast_only).await?;
            Ok(FfiGroupCreated {
                conversation: g.conversation,
                seq: g.seq,
            })
        })
        .await
    }

    /// Joins a public channel (leave it with `leave_group`).
    pub async fn join_channel(&self, conversation: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.join_channel(&conversation).await?) }).await
    }

    /// The channel directory (the search): channels whose name starts with `prefix`
    /// (case-insensitive; "" = all), at most `limit` (0 = 50, at most 100).
    pub async fn list_channels(
        &self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<FfiChannel>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .list_channels(&prefix, limit)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    /// Who of the other members has read message `seq` of `conversation` (names in small
    /// groups and 1:1s, counts always).
    pub async fn receipts(&self, conversation: String, seq: u64) -> Result<FfiReceipts, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.receipts(&conversation, seq).await?.into()) }).await
    }

    /// How many of the group's members are online now.
    pub async fn group_online(&self, conversation: String) -> Result<FfiGroupOnline, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.group_online(&conversation).await?.into()) }).await
    }

    /// [`TernClient::group_online`], and for the next 10 minutes a `Presence` event
    /// whenever a member of the group comes online or goes offline (call again to keep
    /// watching while the group's screen is open; at most 64 groups at once:
    /// `RESOURCE_EXHAUSTED`).
    pub async fn watch_group(&self, conversation: String) -> Result<FfiGroupOnline, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.watch_group(&conversation).await?.into()) }).await
    }

    /// Stops a [`TernClient::watch_group`].
    pub async fn unwatch_group(&self, conversation: String) -> Result<FfiGroupOnline, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.unwatch_group(&conversation).await?.into()) }).await
    }

    /// Who of `users` is online now, and on which devices.
    pub async fn presence(&self, users: Vec<String>) -> Result<Vec<FfiPresence>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .presence(&users)
                .await?
                .into_iter()
                .map(|p| FfiPresence {
                    username: p.username,
                    online_devices: p.online_devices,
                })
                .collect())
        })
        .await
    }

    pub async fn get_profiles(&self, users: Vec<String>) -> Result<Vec<FfiProfile>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .get_profiles(&users)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    /// Sets this user's display name and/or status (`None` keeps one as it is).
    pub async fn set_profile(
        &self,
        display_name: Option<String>,
        status: Option<String>,
    ) -> Result<FfiProfile, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .set_profile(display_name.as_deref(), status.as_deref())
                .await?
                .into())
        })
        .await
    }

    /// Users whose name or display name starts with `prefix` (at least 2 characters,
    /// case-insensitive), at most `limit` (0 = 20, at most 50); `RATE_LIMITED` when
    /// searching too fast.
    pub async fn search_users(
        &self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<FfiUserMatch>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .search_users(&prefix, limit)
                .await?
                .into_iter()
                .map(|u| FfiUserMatch {
                    user: u.user,
                    display_name: u.display_name,
                })
                .collect())
        })
        .await
    }

    pub async fn contacts(&self) -> Result<Vec<FfiContact>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .contacts()
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    pub async fn send_friend_request(&self, user: String, message: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.send_friend_request(&user, &message).await?) }).await
    }

    pub async fn accept_friend_request(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.accept_friend_request(&user).await?) }).await
    }

    pub async fn decline_friend_request(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.decline_friend_request(&user).await?) }).await
    }

    /// Withdraws this user's own request to `user`.
    pub async fn cancel_friend_request(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.cancel_friend_request(&user).await?) }).await
    }

    pub async fn remove_friend(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.remove_friend(&user).await?) }).await
    }

    /// `user`'s direct messages to this user (and this user's to them) are refused with
    /// `BLOCKED`, and `user` sees this user offline.
    pub async fn block_user(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.block_user(&user).await?) }).await
    }

    pub async fn unblock_user(&self, user: String) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.unblock_user(&user).await?) }).await
    }

    /// Turns this user's read receipts on or off (`None` keeps the setting); returns
    /// whether they are sent now.
    pub async fn set_send_receipts(&self, send_receipts: Option<bool>) -> Result<bool, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.set_user_settings(send_receipts).await?.send_receipts) })
            .await
    }

    /// Wakes this device through the operator's push gateway while it has no live
    /// connection (docs/PUSH.md): `platform` is `apns`, `fcm`, `webpush` or `webhook`,
    /// `token` the platform's device token or endpoint URL; `include_preview` puts the
    /// message text into notifications. Kept by the server until
    /// `unregister_push_target`, logout or revoke.
    pub async fn register_push_target(
        &self,
        platform: String,
        token: String,
        include_preview: bool,
    ) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .register_push_target(&platform, &token, include_preview)
                .await?)
        })
        .await
    }

    pub async fn unregister_push_target(&self) -> Result<(), FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.unregister_push_target().await?) }).await
    }

    /// Confirms what the listener has had (mode `Listener`), acks it, saves the state and
    /// closes the connection; a `Closed` event is the last one. Unacknowledged sends stay
    /// in the state file for the next start; events the listener has not had yet come
    /// again then. Returns once the listener has taken the last event (`Closed`) and will
    /// not be called again (waiting at most 5 s for a stuck listener; not at all when
    /// called from inside `on_event`), so an app may exit right after: a callback into an
    /// interpreter that is shutting down can abort the process.
    pub async fn close(&self) {
        let client = self.client.clone();
        let unconfirmed = self.unconfirmed.clone();
        let name = self.name.clone();
        let wait = (std::thread::current().id() != self.delivery_thread)
            .then(|| self.delivery_finished.clone());
        let _ = on_runtime(async move {
            if let Some(unconfirmed) = unconfirmed {
                crate::events::confirm(&client, &unconfirmed, &name).await;
            }
            client.close().await;
            if let Some(mut finished) = wait {
                let ended = tokio::time::timeout(CLOSE_WAIT, finished.wait_for(|f| *f)).await;
                if ended.is_err() {
                    tracing::warn!(client = %name, "the event listener is still busy after close");
                }
            }
            Ok(())
        })
        .await;
    }
}

/// Dropping the object (the foreign side released it) closes the client as `close()`
/// does, without waiting: the event thread keeps a handle of its own (to confirm), so
/// the client would otherwise stay connected with nobody to use it.
impl Drop for TernClient {
    fn drop(&mut self) {
        let client = self.client.clone();
        let unconfirmed = self.unconfirmed.clone();
        let name = self.name.clone();
        runtime().spawn(async move {
            if let Some(unconfirmed) = unconfirmed {
                crate::events::confirm(&client, &unconfirmed, &name).await;
            }
            client.close().await;
        });
    }
}

impl TernClient {
    fn with_local<T>(
        &self,
        read: impl FnOnce(&SqliteStore) -> std::io::Result<T>,
    ) -> Result<T, FfiError> {
        let Some((path, reader)) = &self.local else {
            return Err(invalid(
                "no local copy: the client was started without sqlite_state",
            ));
        };
        let storage = |e: std::io::Error| FfiError::Storage {
            detail: e.to_string(),
        };
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            // A second connection: WAL lets it read while the client writes.
            *reader = Some(SqliteStore::open(path).map_err(storage)?);
        }
        read(reader.as_ref().expect("opened above")).map_err(storage)
    }
}

/// Creates an account (a connection of its own; no client needed).
#[uniffi::export]
pub async fn register(
    server: String,
    ca_cert_path: String,
    username: String,
    password: String,
) -> Result<(), FfiError> {
    let addr = resolve(&server)?;
    let opts = ConnectOptions::new(trust(&ca_cert_path)?);
    on_runtime(async move {
        Ok(tern_sdk::register(addr, &opts, TransportMode::Auto, &username, &password).await?)
    })
    .await
}

/// What a successful login says.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiLoginOk {
    pub username: String,
    pub device: String,
    pub token_expires_ms: u64,
    pub inbox_head: u64,
    pub server_time_ms: u64,
}

/// Checks credentials with a one-off login (a connection of its own). A `TernClient`
/// logs in by itself; this is for a login screen that wants the answer first.
#[uniffi::export]
pub async fn login(
    server: String,
    ca_cert_path: String,
    username: String,
    password: String,
    device: String,
) -> Result<FfiLoginOk, FfiError> {
    let addr = resolve(&server)?;
    let opts = ConnectOptions::new(trust(&ca_cert_path)?);
    on_runtime(async move {
        let creds = Credentials {
            username,
            password: Some(password),
            device,
        };
        let ok = tern_sdk::login(addr, &opts, TransportMode::Auto, &creds).await?;
        Ok(FfiLoginOk {
            username: ok.username,
            device: ok.device,
            token_expires_ms: ok.token_expires_ms,
            inbox_head: ok.inbox_head,
            server_time_ms: ok.server_time_ms,
        })
    })
    .await
}
