//! Encoding and routing of message pushes: the one place a push frame is built.

use bytes::Bytes;
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};

use super::router::Router;

/// The push frame of a stored message at a recipient's inbox position (0 for read
/// diffusion, where there is no inbox entry).
pub(crate) fn push_frame(msg: &pb::Message, inbox_seq: u64) -> Bytes {
    encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::Push(pb::MessagePush {
            message: Some(msg.clone()),
            inbox_seq,
        })),
    })
}

/// Read diffusion: one frame, encoded once, to every online recipient.
pub(crate) fn to_all(router: &dyn Router, msg: &pb::Message, recipients: &[String]) {
    let frame = push_frame(msg, 0);
    for u in recipients {
        router.deliver(u, &frame);
    }
}

/// Write diffusion: each recipient's push names its own inbox seq, so the frame is
/// encoded per online recipient (and shared by that recipient's devices).
pub(crate) fn to_inboxes(router: &dyn Router, msg: &pb::Message, inboxes: &[(String, u64)]) {
    for (u, inbox_seq) in inboxes {
        if router.is_online(u) {
            router.deliver(u, &push_frame(msg, *inbox_seq));
        }
    }
}

/// A read position moved: one frame, encoded once, to every online recipient (the
/// reader's own devices and the members who get receipts).
pub(crate) fn read_receipt(
    router: &dyn Router,
    conversation: &str,
    user: &str,
    read_seq: u64,
    recipients: &[String],
) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::ReadReceipt(pb::ReadReceipt {
            conversation: conversation.to_string(),
            user: user.to_string(),
            read_seq,
        })),
    });
    for u in recipients {
        router.deliver(u, &frame);
    }
}

/// A user's settings of a conversation changed: to every device of that user.
pub(crate) fn settings_changed(
    router: &dyn Router,
    user: &str,
    settings: &pb::ConversationSettings,
) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::SettingsChanged(settings.clone())),
    });
    router.deliver(user, &frame);
}

/// A typing signal: one frame, encoded once, to the given online members.
pub(crate) fn typing(router: &dyn Router, event: &pb::TypingEvent, to: &[String]) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::TypingEvent(event.clone())),
    });
    for u in to {
        router.deliver(u, &frame);
    }
}

/// A user deleted a message for themselves: to every device of that user.
pub(crate) fn message_hidden(router: &dyn Router, user: &str, conversation: &str, seq: u64) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::MessageHidden(pb::MessageHidden {
            conversation: conversation.to_string(),
            seq,
        })),
    });
    router.deliver(user, &frame);
}

/// A user's profile changed: one frame, encoded once, to the given online users.
pub(crate) fn profile_changed(router: &dyn Router, profile: &pb::Profile, to: &[String]) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::ProfileChanged(pb::ProfileChanged {
            profile: Some(profile.clone()),
        })),
    });
    for u in to {
        router.deliver(u, &frame);
    }
}

/// A user came online or went offline: one frame, encoded once, to the given peers.
pub(crate) fn presence(router: &dyn Router, user: &str, online: bool, now_ms: u64, to: &[String]) {
    let frame = encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::PresenceEvent(pb::PresenceEvent {
            user: user.to_string(),
            online,
            server_time_ms: now_ms,
        })),
    });
    for u in to {
        router.deliver(u, &frame);
    }
}
