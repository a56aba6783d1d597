//! `tern`: the command-line chat client of tern, for people (`tern chat`) and for scripts
//! (`tern send --stdin`, `tern sync`, JSON lines on stdout, distinct exit codes).
//!
//! It never speaks frames itself: everything goes through tern-sdk, which reconnects,
//! resends unacknowledged messages with their original ids and delivers each message once,
//! in order.
//!
//! How the modules fit:
//! - `main.rs` (this file): the clap command line, dispatch, and the exit code.
//! - [`commands`]: one function per command (register, login, send, sync, history, group,
//!   presence, conversations, read, receipts, typing, mute/unmute/pin/unpin,
//!   edit/recall/delete, settings, chat).
//! - [`contacts`]: `tern friend ...`, `tern block`, `tern unblock`.
//! - [`session`]: from global flags to a running SDK client (server address, CA, profile)
//!   and the watching of its events (first connection, reconnects, lost authentication).
//! - [`people`]: `tern profile set|get` (display name, status) and `tern users search`.
//! - [`search`]: `tern search` (full-text history search).
//! - [`profile`]: the profile file (user, device, server) and `profile.db` beside it (the
//!   SDK's SQLite store: token, cursors, outbox, local copy), with the `StateStore` over it.
//! - [`output`]: JSON lines and human formatting.
//! - [`error`]: failures and the one mapping from an error to an exit code and message.
//!
//! Exit codes: 0 success, 1 other failure, 2 usage or invalid input, 3 authentication
//! (bad credentials, not logged in, authentication lost), 4 server unreachable, 5
//! forbidden or not found.

mod admin;
mod commands;
mod contacts;
mod error;
mod files;
mod output;
mod people;
mod profile;
mod search;
mod session;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tern_sdk::TransportMode;

use crate::commands::{Dest, GroupOp};
use crate::error::Kind;
use crate::session::Ctx;

#[derive(Debug, Parser)]
#[command(
    name = "tern",
    version,
    about = "tern: chat from the command line, and from scripts",
    after_help = "send and sync print JSON lines. Exit codes: 0 ok, 1 error, 2 usage or \
                  invalid input, 3 authentication, 4 server unreachable, 5 forbidden or not found."
)]
struct Cli {
    /// Server address.
    #[arg(long, global = true, env = "TERN_SERVER", value_name = "HOST:PORT")]
    server: Option<String>,
    /// PEM file of the CA to trust [default: ./tern-data/certs/ca.pem if it exists].
    #[arg(long, global = true, env = "TERN_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Transport to the server.
    #[arg(long, global = true, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// Profile file [default: $XDG_CONFIG_HOME/tern/profile.json or ~/.config/tern/profile.json].
    /// It names the account (user, device, server); the login token, cursors, unsent
    /// messages and the local copy of received ones are in the SQLite file beside it
    /// (profile.json -> profile.db).
    #[arg(long, global = true, env = "TERN_PROFILE", value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Machine output: one JSON object per line (errors too, on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// Show connection changes on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// Give up when the first connection takes longer than this.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    /// QUIC, falling back to TLS over TCP.
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

impl From<TransportArg> for TransportMode {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Auto => TransportMode::Auto,
            TransportArg::Quic => TransportMode::Quic,
            TransportArg::Tcp => TransportMode::Tcp,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account.
    Register {
        user: String,
        #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Log in: the account goes in the profile, the token in profile.db beside it.
    Login {
        user: String,
        #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
        password: String,
        /// Name of this installation [default: cli-HOSTNAME].
        #[arg(long)]
        device: Option<String>,
    },
    /// Show who the profile is logged in as (no network).
    Whoami,
    /// Send a message, or each line of stdin as one message; prints one JSON ack per message.
    Send {
        #[command(flatten)]
        dest: SendDest,
        /// The message (several words are joined with spaces); with --file, its caption.
        #[arg(required_unless_present_any = ["stdin", "file"], conflicts_with = "stdin")]
        text: Vec<String>,
        /// Send every line of stdin as one message, pipelined, in order.
        #[arg(long)]
        stdin: bool,
        /// Send this file: an image message for a PNG, JPEG, GIF or WebP (by content),
        /// a file message otherwise. Uploaded first (resumed across reconnects, with a
        /// progress line on a terminal); the ack line adds "blob", "size" and "sha256".
        #[arg(long, value_name = "PATH", conflicts_with_all = ["stdin", "reply_to", "mention", "ttl"])]
        file: Option<std::path::PathBuf>,
        /// Reply to this message (a seq of the same conversation).
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        reply_to: Option<u64>,
        /// Mention these members, comma-separated; `@all` mentions everyone (group
        /// owners and admins only).
        #[arg(long, value_delimiter = ',', value_name = "U1,U2")]
        mention: Vec<String>,
        /// Time to live: a device that would get the message later than SECS seconds
        /// from now gets an "expired" mark instead, and if this command cannot send it
        /// within SECS it gives up (code EXPIRED). Default: never dropped.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
        ttl: Option<u32>,
    },
    /// Download a blob (an image or file a message carries, its "blob" field) into a
    /// file, checked against its sha256; prints {"blob":..,"size":N,"sha256":..,"mime":..}.
    Download {
        /// The blob id: 64 hex digits
        blob: String,
        /// Where to write it (written whole or not at all)
        #[arg(long, short, value_name = "PATH")]
        output: std::path::PathBuf,
    },
    /// Print missed messages (then live ones with --follow) as JSON lines, and events as
    /// lines with an "event" field: "read" (your other device read) and "receipt" (another
    /// member read), "settings" (mute/pin), "typing" and "presence" (a contact came online
    /// or went offline; these two are live state, printed only with --follow), "edit"
    /// (message seq now reads text), "recall" (message seq was taken
    /// back), "expired" (message seq came after its time to live: no text), "hidden" (you
    /// deleted message seq for yourself).
    Sync {
        /// Keep running and print messages as they come, until Ctrl-C.
        #[arg(long, conflicts_with = "idle_exit")]
        follow: bool,
        /// Once caught up, exit after this many seconds without a new message.
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<u64>,
    },
    /// Print a page of a conversation's history, oldest first. Edited messages show their
    /// latest text with "edited":true; recalled and expired ones have no text and
    /// "recalled":true / "expired":true; messages you deleted are left out, and so are the
    /// edit and recall entries themselves (the message they change shows the result), so
    /// a page may have fewer lines than --limit.
    ///
    /// Read from the local copy that `tern sync` and `tern chat` keep (SQLite, beside the
    /// profile: profile.json -> profile.db), so it works offline and shows what this
    /// device has received; --remote asks the server for the conversation as it is there.
    History {
        #[command(flatten)]
        dest: ConvDest,
        /// How many messages.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only messages before this seq [default: the newest].
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        before: Option<u64>,
        /// Ask the server instead of reading the local copy.
        #[arg(long)]
        remote: bool,
    },
    /// Groups: create, add, remove, leave, members.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Public channels: create, list (the directory), join, leave.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Friends: request, accept, decline, cancel, remove, list.
    #[command(subcommand)]
    Friend(FriendCommand),
    /// Block a user: no direct messages either way, your presence hidden from them, no
    /// friend requests from them (they are not told).
    Block { user: String },
    /// Lift your block of a user.
    Unblock { user: String },
    /// Your profile (display name, status) and other users' profiles.
    #[command(subcommand, name = "profile")]
    UserProfile(ProfileCommand),
    /// Find users by user name or display name prefix.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Search the history of your conversations for messages with every word of QUERY
    /// (case-insensitive; Chinese, Japanese and Korean text matches its characters in
    /// order: "世界" finds "你好世界"). Prints hits newest first, as `tern history` prints
    /// them (the same JSON lines with --json).
    Search {
        /// Words to find, all required (no operators: punctuation is ignored)
        query: String,
        /// Only the 1:1 conversation with this user.
        #[arg(long = "with", value_name = "USER", conflicts_with = "group")]
        with: Option<String>,
        /// Only this group (its id, g:...).
        #[arg(long, value_name = "GID")]
        group: Option<String>,
        /// Only messages this user sent.
        #[arg(long, value_name = "USER")]
        from: Option<String>,
        /// At most this many hits.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Show the online devices of users, or with --group how many members of a group are
    /// online ({"conv":..,"members":N,"online":N} with --json). --watch also makes the
    /// group's members' online/offline changes reach you (as "presence" event lines in
    /// `tern sync --follow` and in `tern chat`) for the next 10 minutes; --unwatch stops it.
    Presence {
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        users: Vec<String>,
        /// A group id (g:...)
        #[arg(long)]
        group: Option<String>,
        #[arg(long, requires = "group", conflicts_with = "unwatch")]
        watch: bool,
        #[arg(long, requires = "group")]
        unwatch: bool,
    },
    /// List your conversations, pinned first, then most recent first, with unread counts
    /// (one JSON line each with --json).
    Conversations {
        /// Print only the total unread over all conversations but the muted ones:
        /// {"total_unread":N}.
        #[arg(long)]
        total: bool,
    },
    /// Mark a conversation read, up to the latest message or up to --seq; prints
    /// {"conv":..,"read_seq":N} with --json.
    Read {
        #[command(flatten)]
        dest: ConvDest,
        /// Read up to this seq [default: the latest]. Read positions never move back.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        seq: Option<u64>,
    },
    /// Show who of the other members has read message --seq; prints
    /// {"conv":..,"seq":N,"read_by":[users],"read_count":N} with --json (read_by is empty
    /// in large read-diffusion groups: counts only).
    Receipts {
        #[command(flatten)]
        dest: ConvDest,
        /// The message.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        seq: u64,
    },
    /// Tell the members online now that you are typing (one signal; it ends by itself
    /// after a few seconds).
    Typing {
        #[command(flatten)]
        dest: ConvDest,
    },
    /// Mute a conversation on all your devices: its unread is left out of the total;
    /// prints {"conv":..,"muted":bool,"pinned":bool} with --json.
    Mute {
        #[command(flatten)]
        dest: ConvDest,
    },
    /// Unmute a conversation (its unread counts in the total again).
    Unmute {
        #[command(flatten)]
        dest: ConvDest,
    },
    /// Pin a conversation on all your devices: listed before the others.
    Pin {
        #[command(flatten)]
        dest: ConvDest,
    },
    /// Unpin a conversation.
    Unpin {
        #[command(flatten)]
        dest: ConvDest,
    },
    /// Replace the text of one of your messages (within the server's edit window, 48 h by
    /// default); prints {"conv":..,"seq":N,"ok":true} with --json. Too late: exit 5,
    /// code WINDOW_EXPIRED; not yours: exit 5, FORBIDDEN.
    Edit {
        #[command(flatten)]
        dest: ConvDest,
        /// The message to edit.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        seq: u64,
        /// The new text (several words are joined with spaces).
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Take back ("unsend") a message: yours within the recall window (2 minutes by
    /// default), or anyone's in a group you own or administer. Everyone sees it as
    /// recalled; its text is gone from the server. Prints {"conv":..,"seq":N,"ok":true}.
    Recall {
        #[command(flatten)]
        dest: ConvDest,
        /// The message to recall.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        seq: u64,
    },
    /// Delete a message for yourself, on all your devices (nobody else is affected);
    /// prints {"conv":..,"seq":N,"ok":true}.
    Delete {
        #[command(flatten)]
        dest: ConvDest,
        /// The message to delete.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        seq: u64,
    },
    /// Show your account settings, or change them; prints {"send_receipts":bool} with
    /// --json. With --send-receipts off, the other members no longer see how far you have
    /// read ("read" receipts and `tern receipts` leave you out); your own unread counts are
    /// not affected.
    Settings {
        /// Let others see how far you have read.
        #[arg(long, value_enum, value_name = "on|off")]
        send_receipts: Option<OnOff>,
    },
    /// Operate the server over its admin HTTP API (docs/ADMIN_API.md): online users,
    /// disable/enable/revoke a user, broadcast a notice, figures. Needs the server's
    /// --admin-listen address and its admin.token file.
    Admin(AdminArgs),
    /// Offline push: this device's push target (docs/PUSH.md).
    #[command(subcommand)]
    Push(PushCommand),
    /// Chat interactively in one conversation: it opens with the last 20 messages, stdin
    /// lines are sent, what is shown is marked read; receipts, typing, edits and recalls
    /// are shown as they come. Lines are `[HH:MM:SS #SEQ] user: text`.
    Chat {
        #[command(flatten)]
        dest: ConvDest,
    },
}

#[derive(Debug, Subcommand)]
enum PushCommand {
    /// Wake this device through the server's push gateway while it is offline; prints
    /// {"push":"registered","platform":..,"preview":bool}. Bad platform or token: exit 2,
    /// code INVALID_ARGUMENT.
    Register {
        /// apns, fcm, webpush or webhook
        #[arg(long, value_name = "PLATFORM")]
        platform: String,
        /// The platform's device token, or the endpoint URL
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// Put the message text into notifications (off: only who wrote where)
        #[arg(long)]
        preview: bool,
    },
    /// Stop push notifications to this device; prints {"push":"unregistered"}.
    Unregister,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// The admin API, as the server printed it (admin=http://HOST:PORT/admin/v1/).
    #[arg(long, env = "TERN_ADMIN_URL", value_name = "URL")]
    url: String,
    /// The file holding the bearer token [default: tern-data/admin.token].
    #[arg(long, env = "TERN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users online now and their devices; with --json {"count":N,"users":[{"user":..,"devices":[..]}]}.
    Online,
    /// One user: disable, enable, revoke, show.
    #[command(subcommand)]
    User(AdminUserCommand),
    /// Send a SYSTEM notice to every user (durable: offline users get it when they sync).
    Broadcast {
        /// The notice (several words are joined with spaces).
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// The server's figures: connections, users, groups, messages, store size, uptime.
    Stats,
}

#[derive(Debug, Subcommand)]
enum AdminUserCommand {
    /// No Login, no Resume; live sessions are closed at once.
    Disable { user: String },
    /// Let a disabled user log in again.
    Enable { user: String },
    /// Revoke every token of every device; live sessions are closed at once.
    Revoke { user: String },
    /// Profile, devices, created, disabled.
    Show { user: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct SendDest {
    /// Write to this user (1:1 conversation).
    #[arg(long, value_name = "USER")]
    to: Option<String>,
    /// Write to this group (its id, g:...).
    #[arg(long, value_name = "GID")]
    group: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ConvDest {
    /// The 1:1 conversation with this user.
    #[arg(long = "with", value_name = "USER")]
    with: Option<String>,
    /// The group (its id, g:...).
    #[arg(long, value_name = "GID")]
    group: Option<String>,
}

fn dest(user: Option<String>, group: Option<String>) -> Dest {
    match (user, group) {
        (Some(u), _) => Dest::User(u),
        (None, Some(g)) => Dest::Group(g),
        // clap's arg group makes one of them required.
        (None, None) => Dest::Group(String::new()),
    }
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Set your display name and/or status ("" clears one); prints your profile
    /// ({"user":..,"name":..,"status":..,"avatar":null} with --json).
    Set {
        /// Display name, at most 64 characters
        #[arg(long)]
        name: Option<String>,
        /// Status text, at most 256 characters
        #[arg(long)]
        status: Option<String>,
        /// Avatar: a PNG, JPEG, GIF or WebP image file, uploaded ("" removes it)
        #[arg(long, value_name = "FILE")]
        avatar: Option<String>,
    },
    /// Show users' profiles; one JSON line each with --json:
    /// {"user":..,"name":..,"status":..,"avatar":null}. Unknown users are left out.
    Get {
        #[arg(required = true)]
        users: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Users whose name or display name starts with PREFIX (at least 2 characters,
    /// case-insensitive); one JSON line each with --json: {"user":..,"name":..}.
    Search {
        prefix: String,
        /// At most this many (the server caps it at 50)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum FriendCommand {
    /// Ask a user to be friends (accepts their request if they asked first).
    Request {
        user: String,
        /// A message shown with the request (at most 256 bytes).
        #[arg(long)]
        message: Option<String>,
    },
    /// Accept a user's friend request.
    Accept { user: String },
    /// Decline a user's friend request.
    Decline { user: String },
    /// Withdraw your friend request to a user.
    Cancel { user: String },
    /// End a friendship.
    Remove { user: String },
    /// Your contacts; one JSON line each with --json:
    /// {"user":..,"state":"friend"|"incoming"|"outgoing"|"blocked"}.
    List,
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Create a public channel; prints {"group":"g:..."}.
    Create {
        name: String,
        /// Only you (the owner) and admins may post
        #[arg(long)]
        broadcast_only: bool,
    },
    /// The directory: channels whose name starts with PREFIX (all without it); one JSON
    /// line each with --json: {"conv":..,"name":..,"topic":..,"members":N,"broadcast_only":bool,"joined":bool}.
    List { prefix: Option<String> },
    /// Join a public channel.
    Join { group: String },
    /// Leave a channel.
    Leave { group: String },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group; prints {"group":"g:..."}.
    Create {
        name: String,
        /// Members besides you, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "U1,U2")]
        members: Vec<String>,
    },
    /// Add users to a group.
    Add {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove users from a group.
    Remove {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Leave a group.
    Leave { group: String },
    /// List a group's members and their roles.
    Members { group: String },
    /// The owner makes a member an admin, or an admin a plain member.
    Role {
        group: String,
        user: String,
        #[arg(value_parser = ["member", "admin"])]
        role: String,
    },
    /// The owner hands the group to another member (and becomes an admin).
    Transfer { group: String, user: String },
    /// The owner or an admin changes the group's name, topic, mute-all (only the owner and
    /// admins may send), member cap (0 = the server's) or history visibility.
    Set {
        group: String,
        #[arg(long)]
        name: Option<String>,
        /// The topic / announcement ("" clears it)
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, value_parser = ["on", "off"])]
        mute_all: Option<String>,
        #[arg(long)]
        max_members: Option<u32>,
        /// Who reads which history: joined (members read from when they were added; the
        /// default for new groups), shared (members read it all), public (channels only:
        /// anyone reads it all)
        #[arg(long, value_parser = ["joined", "shared", "public"])]
        visibility: Option<String>,
    },
    /// The owner dissolves the group: nobody is a member afterwards.
    Dissolve { group: String },
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        server: cli.server,
        ca: cli.ca,
        transport: cli.transport.into(),
        profile: cli.profile,
        json: cli.json,
        verbose: cli.verbose,
        connect_timeout: Duration::from_secs(cli.connect_timeout),
    };
    match cli.command {
        Command::Register { user, password } => commands::register(&ctx, &user, &password).await,
        Command::Login {
            user,
            password,
            device,
        } => commands::login(&ctx, &user, &password, device).await,
        Command::Whoami => commands::whoami(&ctx).await,
        Command::Send {
            dest: d,
            text,
            file: Some(path),
            ..
        } => files::send_file(&ctx, dest(d.to, d.group), path, text.join(" ")).await,
        Command::Send {
            dest: d,
            text,
            stdin,
            reply_to,
            mention,
            ttl,
            file: None,
        } => {
            let text = (!stdin).then(|| text.join(" "));
            let mut options = commands::mention_options(reply_to, &mention)?;
            options.ttl_secs = ttl.unwrap_or(0);
            commands::send(&ctx, dest(d.to, d.group), text, stdin, options).await
        }
        Command::Download { blob, output } => files::download(&ctx, blob, output).await,
        Command::Sync { follow, idle_exit } => commands::sync(&ctx, follow, idle_exit).await,
        Command::History {
            dest: d,
            limit,
            before,
            remote,
        } => commands::history(&ctx, dest(d.with, d.group), limit, before, remote).await,
        Command::Group(g) => {
            let op = match g {
                GroupCommand::Create { name, members } => GroupOp::Create { name, members },
                GroupCommand::Add { group, users } => GroupOp::Add { group, users },
                GroupCommand::Remove { group, users } => GroupOp::Remove { group, users },
                GroupCommand::Leave { group } => GroupOp::Leave { group },
                GroupCommand::Members { group } => GroupOp::Members { group },
                GroupCommand::Role { group, user, role } => GroupOp::Role {
                    group,
                    user,
                    admin: role == "admin",
                },
                GroupCommand::Transfer { group, user } => GroupOp::Transfer { group, user },
                GroupCommand::Set {
                    group,
                    name,
                    topic,
                    mute_all,
                    max_members,
                    visibility,
                } => GroupOp::Set {
                    update: tern_proto::pb::UpdateGroup {
                        conversation: group,
                        name,
                        topic,
                        mute_all: mute_all.map(|m| m == "on"),
                        max_members,
                        visibility: visibility.map(|v| {
                            use tern_proto::pb::HistoryVisibility as V;
                            (match v.as_str() {
                                "shared" => V::Shared,
                                "public" => V::Public,
                                _ => V::Joined,
                            }) as i32
                        }),
                    },
                },
                GroupCommand::Dissolve { group } => GroupOp::Dissolve { group },
            };
            commands::group(&ctx, op).await
        }
        Command::Friend(f) => {
            use contacts::Change;
            let (user, change) = match f {
                FriendCommand::Request { user, message } => (user, Change::Request(message)),
                FriendCommand::Accept { user } => (user, Change::Accept),
                FriendCommand::Decline { user } => (user, Change::Decline),
                FriendCommand::Cancel { user } => (user, Change::Cancel),
                FriendCommand::Remove { user } => (user, Change::Remove),
                FriendCommand::List => return contacts::list(&ctx).await,
            };
            contacts::change(&ctx, user, change).await
        }
        Command::Block { user } => contacts::change(&ctx, user, contacts::Change::Block).await,
        Command::Unblock { user } => contacts::change(&ctx, user, contacts::Change::Unblock).await,
        Command::Channel(c) => match c {
            ChannelCommand::Create {
                name,
                broadcast_only,
            } => commands::channel_create(&ctx, name, broadcast_only).await,
            ChannelCommand::List { prefix } => {
                commands::channel_list(&ctx, prefix.unwrap_or_default()).await
            }
            ChannelCommand::Join { group } => commands::channel_join(&ctx, group).await,
            ChannelCommand::Leave { group } => {
                commands::group(&ctx, commands::GroupOp::Leave { group }).await
            }
        },
        Command::UserProfile(ProfileCommand::Set {
            name,
            status,
            avatar,
        }) => people::set(&ctx, name, status, avatar).await,
        Command::UserProfile(ProfileCommand::Get { users }) => people::get(&ctx, users).await,
        Command::Users(UsersCommand::Search { prefix, limit }) => {
            people::search(&ctx, prefix, limit).await
        }
        Command::Search {
            query,
            with,
            group,
            from,
            limit,
        } => search::search(&ctx, query, with, group, from, limit).await,
        Command::Presence {
            users, group: None, ..
        } => commands::presence(&ctx, users).await,
        Command::Presence {
            group: Some(group),
            watch,
            unwatch,
            ..
        } => commands::group_presence(&ctx, group, watch, unwatch).await,
        Command::Conversations { total } => commands::conversations(&ctx, total).await,
        Command::Read { dest: d, seq } => commands::read(&ctx, dest(d.with, d.group), seq).await,
        Command::Receipts { dest: d, seq } => {
            commands::receipts(&ctx, dest(d.with, d.group), seq).await
        }
        Command::Typing { dest: d } => commands::typing(&ctx, dest(d.with, d.group)).await,
        Command::Mute { dest: d } => {
            commands::settings(&ctx, dest(d.with, d.group), Some(true), None).await
        }
        Command::Unmute { dest: d } => {
            commands::settings(&ctx, dest(d.with, d.group), Some(false), None).await
        }
        Command::Pin { dest: d } => {
            commands::settings(&ctx, dest(d.with, d.group), None, Some(true)).await
        }
        Command::Unpin { dest: d } => {
            commands::settings(&ctx, dest(d.with, d.group), None, Some(false)).await
        }
        Command::Edit { dest: d, seq, text } => {
            let change = commands::Change::Edit(text.join(" "));
            commands::change(&ctx, dest(d.with, d.group), seq, change).await
        }
        Command::Recall { dest: d, seq } => {
            commands::change(&ctx, dest(d.with, d.group), seq, commands::Change::Recall).await
        }
        Command::Delete { dest: d, seq } => {
            commands::change(&ctx, dest(d.with, d.group), seq, commands::Change::Delete).await
        }
        Command::Settings { send_receipts } => {
            let send_receipts = send_receipts.map(|v| matches!(v, OnOff::On));
            commands::user_settings(&ctx, send_receipts).await
        }
        Command::Push(PushCommand::Register {
            platform,
            token,
            preview,
        }) => commands::push_register(&ctx, &platform, &token, preview).await,
        Command::Push(PushCommand::Unregister) => commands::push_unregister(&ctx).await,
        Command::Chat { dest: d } => commands::chat(&ctx, dest(d.with, d.group)).await,
        Command::Admin(a) => {
            let token_file = a.token_file.unwrap_or_else(admin::default_token_file);
            let op = match a.command {
                AdminCommand::Online => admin::AdminOp::Online,
                AdminCommand::User(AdminUserCommand::Disable { user }) => {
                    admin::AdminOp::Disable(user)
                }
                AdminCommand::User(AdminUserCommand::Enable { user }) => {
                    admin::AdminOp::Enable(user)
                }
                AdminCommand::User(AdminUserCommand::Revoke { user }) => {
                    admin::AdminOp::Revoke(user)
                }
                AdminCommand::User(AdminUserCommand::Show { user }) => admin::AdminOp::Show(user),
                AdminCommand::Broadcast { text } => admin::AdminOp::Broadcast(text.join(" ")),
                AdminCommand::Stats => admin::AdminOp::Stats,
            };
            admin::Admin::new(&a.url, &token_file, ctx.json)?
                .run(op)
                .await
        }
    }
}

/// A clap error on one line: its first paragraph, without the usage block.
fn clap_one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let msg = first.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    format!("{msg} (see tern --help)")
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            let json = std::env::args_os().any(|a| a == "--json");
            let code = error::report_parts(Kind::Usage, "USAGE", &clap_one_line(&e), json);
            std::process::exit(code);
        }
    };
    let json = cli.json;
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let result = rt.block_on(run(cli));
            // Do not wait for the runtime's tasks (e.g. a reconnect attempt in progress).
            rt.shutdown_background();
            match result {
                Ok(()) => 0,
                Err(e) => error::report(&e, json),
            }
        }
        Err(e) => error::report(
            &anyhow::Error::new(e).context("cannot start the runtime"),
            json,
        ),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
