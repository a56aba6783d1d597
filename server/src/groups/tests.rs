//! Group rules on the in-memory store: roles, membership changes as durable SYSTEM
//! messages, the owner's succession, the member cap.

use tern_proto::pb::{self, ErrorCode, Role};

use crate::testkit::World;

fn create(name: &str, members: &[&str]) -> pb::CreateGroup {
    pb::CreateGroup {
        name: name.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn add(conv: &str, users: &[&str], role: Role) -> pb::AddMembers {
    pb::AddMembers {
        conversation: conv.into(),
        users: users.iter().map(|m| m.to_string()).collect(),
        role: role as i32,
    }
}

async fn roles(w: &World, who: &str, conv: &str) -> Vec<(String, i32)> {
    let list = w.groups.list_members(who, conv).await.unwrap();
    list.members
        .into_iter()
        .map(|m| (m.username, m.role))
        .collect()
}

#[tokio::test]
async fn every_change_is_a_system_message_in_order_and_roles_are_enforced() {
    let w = World::new();
    w.users(&["own", "adm", "mem", "new"]);
    let g = w
        .groups
        .create_group("own", create("team", &["adm", "mem"]))
        .await
        .unwrap();
    assert_eq!(g.seq, 1, "the creation is the group's first message");
    let conv = g.conversation;

    // A member may not manage; the owner may add an admin; an admin may add members.
    let e = w
        .groups
        .add_members("mem", add(&conv, &["new"], Role::Member))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = w
        .groups
        .add_members("own", add(&conv, &["adm"], Role::Owner))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.groups
        .add_members("own", add(&conv, &["new"], Role::Member))
        .await
        .unwrap();

    let remove = |users: &[&str]| pb::RemoveMembers {
        conversation: conv.clone(),
        users: users.iter().map(|m| m.to_string()).collect(),
    };
    let e = w
        .groups
        .remove_members("adm", remove(&["own"]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "the owner cannot be removed");
    w.groups
        .remove_members("own", remove(&["new"]))
        .await
        .unwrap();
    // Removing someone who is not a member changes nothing and writes nothing.
    let before = w.store.last_seq(&conv).unwrap();
    w.groups
        .remove_members("own", remove(&["new"]))
        .await
        .unwrap();
    assert_eq!(w.store.last_seq(&conv).unwrap(), before);

    // The timeline: created, added, removed, as SYSTEM messages with their events.
    let kinds: Vec<i32> = w
        .store
        .timeline(&conv, 1, 10, 10)
        .unwrap()
        .into_iter()
        .map(|m| {
            assert_eq!(m.kind, pb::MessageKind::System as i32);
            m.event.unwrap().kind
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            pb::GroupEventKind::Created as i32,
            pb::GroupEventKind::MembersAdded as i32,
            pb::GroupEventKind::MembersRemoved as i32,
        ]
    );
    w.stop().await;
}

#[tokio::test]
async fn an_owner_who_leaves_hands_the_group_to_an_admin_first() {
    let w = World::new();
    w.users(&["own", "adm", "mem"]);
    let conv = w
        .groups
        .create_group("own", create("team", &["mem"]))
        .await
        .unwrap()
        .conversation;
    w.groups
        .add_members("own", add(&conv, &["adm"], Role::Admin))
        .await
        .unwrap();
    w.groups
        .leave_group(
            "own",
            pb::LeaveGroup {
                conversation: conv.clone(),
            },
        )
        .await
        .unwrap();
    let r = roles(&w, "mem", &conv).await;
    assert_eq!(
        r,
        vec![
            ("adm".into(), Role::Owner as i32),
            ("mem".into(), Role::Member as i32)
        ]
    );
    // The one who left reads nothing more of it.
    let e = w.groups.list_members("own", &conv).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    w.stop().await;
}

#[tokio::test]
async fn a_group_has_a_member_cap_and_unknown_users_are_refused() {
    let w = World::new();
    let names: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    w.users(&refs);
    // LIMITS allows 1000 members: the creator and 1000 others are one too many.
    let e = w
        .groups
        .create_group("u0", create("big", &refs[1..]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    let e = w
        .groups
        .create_group("u0", create("x", &["ghost"]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = w
        .groups
        .create_group("u0", create("", &["u1"]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.stop().await;
}

async fn send_to_group(
    w: &World,
    from: &str,
    conv: &str,
    cmid: &str,
) -> crate::error::ServiceResult<u64> {
    let req = pb::Send {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        body: cmid.as_bytes().to_vec().into(),
        ..Default::default()
    };
    w.acked(|done| w.messages.send(from, "d", req, done))
        .await
        .map(|a| a.seq)
}

fn last_event(w: &World, conv: &str) -> pb::GroupEvent {
    let last = w.store.last_seq(conv).unwrap();
    w.store
        .message(conv, last)
        .unwrap()
        .unwrap()
        .event
        .expect("a group event")
}

#[tokio::test]
async fn the_owner_changes_roles_and_hands_the_group_over() {
    let w = World::new();
    w.users(&["own", "mem", "adm", "out"]);
    let g = w
        .groups
        .create_group("own", create("team", &["mem", "adm"]))
        .await
        .unwrap();
    let conv = g.conversation;
    let role = |user: &str, role: Role| pb::SetMemberRole {
        conversation: conv.clone(),
        user: user.into(),
        role: role as i32,
    };
    w.groups
        .set_member_role("own", role("adm", Role::Admin))
        .await
        .unwrap();
    let e = last_event(&w, &conv);
    assert_eq!(e.kind, pb::GroupEventKind::RoleChanged as i32);
    assert_eq!(
        (e.users.clone(), e.role),
        (vec!["adm".to_string()], Role::Admin as i32)
    );
    // Only the owner; not to OWNER; not for a non-member; not the owner's own role.
    let code = |r: crate::error::ServiceResult<()>| r.unwrap_err().code;
    for (actor, user, to, want) in [
        ("adm", "mem", Role::Admin, ErrorCode::Forbidden),
        ("own", "mem", Role::Owner, ErrorCode::InvalidArgument),
        ("own", "out", Role::Admin, ErrorCode::NotFound),
        ("own", "own", Role::Member, ErrorCode::InvalidArgument),
    ] {
        let got = code(w.groups.set_member_role(actor, role(user, to)).await);
        assert_eq!(got, want, "{actor} sets {user} to {to:?}");
    }
    let before = w.store.last_seq(&conv).unwrap();
    w.groups
        .set_member_role("own", role("adm", Role::Admin))
        .await
        .unwrap();
    assert_eq!(
        w.store.last_seq(&conv).unwrap(),
        before,
        "no change, no event"
    );

    let transfer = |user: &str| pb::TransferOwnership {
        conversation: conv.clone(),
        user: user.into(),
    };
    assert_eq!(
        code(w.groups.transfer_ownership("adm", transfer("mem")).await),
        ErrorCode::Forbidden
    );
    w.groups
        .transfer_ownership("own", transfer("mem"))
        .await
        .unwrap();
    assert_eq!(
        roles(&w, "mem", &conv).await,
        vec![
            ("adm".to_string(), Role::Admin as i32),
            ("mem".to_string(), Role::Owner as i32),
            ("own".to_string(), Role::Admin as i32)
        ]
    );
    assert_eq!(
        last_event(&w, &conv).kind,
        pb::GroupEventKind::OwnerChanged as i32
    );
    // It survives a reload of the state from the store.
    w.convs.remove(&conv);
    assert_eq!(roles(&w, "own", &conv).await[1].1, Role::Owner as i32);
    w.stop().await;
}

#[tokio::test]
async fn the_profile_changes_mute_all_silences_members_and_dissolving_ends_membership() {
    let w = World::new();
    w.users(&["own", "mem", "adm", "new", "more"]);
    let g = w
        .groups
        .create_group("own", create("team", &["mem", "adm"]))
        .await
        .unwrap();
    let conv = g.conversation;
    w.groups
        .add_members("own", add(&conv, &["adm"], Role::Admin))
        .await
        .unwrap();
    w.groups
        .set_member_role(
            "own",
            pb::SetMemberRole {
                conversation: conv.clone(),
                user: "adm".into(),
                role: Role::Admin as i32,
            },
        )
        .await
        .unwrap();
    let update = |name: Option<&str>, topic: Option<&str>, mute_all, max_members| pb::UpdateGroup {
        conversation: conv.clone(),
        name: name.map(Into::into),
        topic: topic.map(Into::into),
        mute_all,
        max_members,
        ..Default::default()
    };
    assert_eq!(
        w.groups
            .update_group("mem", update(Some("x"), None, None, None))
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    w.groups
        .update_group(
            "adm",
            update(Some("renamed"), Some("read the rules"), Some(true), None),
        )
        .await
        .unwrap();
    let e = last_event(&w, &conv);
    assert_eq!(e.kind, pb::GroupEventKind::GroupUpdated as i32);
    assert_eq!(
        (e.name.as_str(), e.topic.as_str(), e.mute_all),
        ("renamed", "read the rules", true)
    );
    let list = w.conversations.list("mem", 0, 0).await.unwrap();
    let c = &list.conversations[0];
    assert_eq!(
        (c.name.as_str(), c.topic.as_str(), c.mute_all),
        ("renamed", "read the rules", true)
    );
    assert_eq!(c.max_members, 0, "no cap of its own yet: the server's");

    // Muted: a plain member may not send; admins and the owner may.
    assert_eq!(
        send_to_group(&w, "mem", &conv, "m1")
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    send_to_group(&w, "adm", &conv, "a1").await.unwrap();
    w.groups
        .update_group("own", update(None, None, Some(false), Some(3)))
        .await
        .unwrap();
    send_to_group(&w, "mem", &conv, "m2").await.unwrap();
    // The group's own cap: 3 members, so one more is refused.
    assert_eq!(
        w.groups
            .add_members("own", add(&conv, &["new"], Role::Member))
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResourceExhausted
    );
    let list = w.conversations.list("mem", 0, 0).await.unwrap();
    assert_eq!(
        list.conversations[0].max_members, 3,
        "the list shows the cap"
    );
    assert_eq!(
        w.groups
            .update_group("own", update(None, None, None, Some(2)))
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument,
        "below the member count"
    );

    assert_eq!(
        w.groups
            .dissolve_group(
                "adm",
                pb::DissolveGroup {
                    conversation: conv.clone()
                }
            )
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    w.groups
        .dissolve_group(
            "own",
            pb::DissolveGroup {
                conversation: conv.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        last_event(&w, &conv).kind,
        pb::GroupEventKind::Dissolved as i32
    );
    for u in ["own", "mem", "adm"] {
        assert_eq!(
            send_to_group(&w, u, &conv, "late").await.unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(w
            .conversations
            .list(u, 0, 0)
            .await
            .unwrap()
            .conversations
            .is_empty());
    }
    w.stop().await;
}

async fn pulled(w: &World, user: &str, conv: &str, after: u64) -> pb::PullResult {
    w.messages
        .pull(
            user,
            pb::Pull {
                conversation: conv.into(),
                after_seq: after,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn history_visibility_joined_hides_what_came_before_and_the_gap_of_a_readd() {
    let w = World::new();
    w.users(&["own", "early", "late"]);
    let g = w
        .groups
        .create_group("own", create("team", &["early"]))
        .await
        .unwrap();
    let conv = g.conversation;
    for i in 0..3 {
        send_to_group(&w, "own", &conv, &format!("before{i}"))
            .await
            .unwrap();
    }
    // seq 1 CREATED, 2-4 messages, 5 MEMBERS_ADDED(late), 6 after.
    w.groups
        .add_members("own", add(&conv, &["late"], Role::Member))
        .await
        .unwrap();
    send_to_group(&w, "own", &conv, "after").await.unwrap();
    let p = pulled(&w, "late", &conv, 0).await;
    assert_eq!(p.first_seq, 5);
    assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [5, 6]);
    assert!(p.complete);
    // Backward paging ends at first_seq too.
    let back = w
        .messages
        .pull(
            "late",
            pb::Pull {
                conversation: conv.clone(),
                before_seq: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((back.from_seq, back.to_seq, back.complete), (5, 6, true));
    // The early member reads everything; the list counts only what late may read.
    assert_eq!(pulled(&w, "early", &conv, 0).await.messages.len(), 6);
    let l = w.conversations.list("late", 0, 0).await.unwrap();
    assert_eq!(
        l.conversations[0].unread, 2,
        "the add event and one message"
    );

    // Removed, a message sent while away, added again: the gap stays hidden.
    w.groups
        .remove_members(
            "own",
            pb::RemoveMembers {
                conversation: conv.clone(),
                users: vec!["late".into()],
            },
        )
        .await
        .unwrap();
    send_to_group(&w, "own", &conv, "while away").await.unwrap(); // seq 8
    w.groups
        .add_members("own", add(&conv, &["late"], Role::Member))
        .await
        .unwrap(); // seq 9
    let p = pulled(&w, "late", &conv, 0).await;
    assert_eq!(p.first_seq, 9);
    assert!(p.messages.iter().all(|m| m.seq >= 9));

    // SHARED: members read the whole history.
    w.groups
        .update_group(
            "own",
            pb::UpdateGroup {
                conversation: conv.clone(),
                visibility: Some(pb::HistoryVisibility::Shared as i32),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p = pulled(&w, "late", &conv, 0).await;
    assert_eq!((p.first_seq, p.messages[0].seq), (1, 1));
    let l = w.conversations.list("late", 0, 0).await.unwrap();
    assert_eq!(
        l.conversations[0].visibility,
        pb::HistoryVisibility::Shared as i32
    );
    w.stop().await;
}

#[tokio::test]
async fn channels_are_listed_joined_read_by_anyone_and_left() {
    let w = World::new();
    w.users(&["host", "fan", "other", "lurker"]);
    let news = w
        .groups
        .create_channel(
            "host",
            pb::CreateChannel {
                name: "News Daily".into(),
                broadcast_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation;
    w.groups
        .create_channel(
            "other",
            pb::CreateChannel {
                name: "newbies".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.groups
        .create_group("host", create("news private", &[]))
        .await
        .unwrap();
    send_to_group(&w, "host", &news, "headline").await.unwrap();

    // The directory: case-insensitive prefix, name order; private groups are not in it.
    let names = |l: pb::ChannelList| l.channels.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(
        names(w.groups.list_channels("fan", "NEW", 0).await.unwrap()),
        ["newbies", "News Daily"]
    );
    assert_eq!(
        names(w.groups.list_channels("fan", "news", 0).await.unwrap()),
        ["News Daily"]
    );
    // Anyone reads a PUBLIC channel's history without joining.
    let p = w
        .messages
        .pull(
            "lurker",
            pb::Pull {
                conversation: news.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.messages.len(), 2);

    w.groups.join_channel("fan", &news).await.unwrap();
    w.groups.join_channel("fan", &news).await.unwrap();
    let l = w.groups.list_channels("fan", "news", 0).await.unwrap();
    assert!(l.channels[0].joined && l.channels[0].broadcast_only);
    assert_eq!(l.channels[0].member_count, 2);
    let st = w.store.last_seq(&news).unwrap();
    assert_eq!(st, 3, "one MEMBERS_ADDED for the join, none for the repeat");
    // Broadcast-only: the fan may read but not post.
    assert_eq!(
        send_to_group(&w, "fan", &news, "me too")
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    let list = w.conversations.list("fan", 0, 0).await.unwrap();
    assert!(list.conversations[0].channel && list.conversations[0].read_diffusion);

    // A private group cannot be joined (nor can an unknown id).
    let private = w.conversations.list("host", 0, 0).await.unwrap();
    let private = private
        .conversations
        .iter()
        .find(|c| !c.channel)
        .unwrap()
        .conversation
        .clone();
    assert_eq!(
        w.groups
            .join_channel("fan", &private)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        w.groups
            .join_channel("fan", "g:0000000000000000")
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    // Leave like any group; rename moves it in the directory; dissolve removes it.
    w.groups
        .leave_group(
            "fan",
            pb::LeaveGroup {
                conversation: news.clone(),
            },
        )
        .await
        .unwrap();
    w.groups
        .update_group(
            "host",
            pb::UpdateGroup {
                conversation: news.clone(),
                name: Some("Zeitung".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(w
        .groups
        .list_channels("fan", "news", 0)
        .await
        .unwrap()
        .channels
        .is_empty());
    assert_eq!(
        names(w.groups.list_channels("fan", "zeit", 0).await.unwrap()),
        ["Zeitung"]
    );
    w.groups
        .dissolve_group(
            "host",
            pb::DissolveGroup {
                conversation: news.clone(),
            },
        )
        .await
        .unwrap();
    assert!(w
        .groups
        .list_channels("fan", "z", 0)
        .await
        .unwrap()
        .channels
        .is_empty());
    let e = w
        .messages
        .pull(
            "lurker",
            pb::Pull {
                conversation: news,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::Forbidden,
        "a dissolved channel is read by nobody"
    );
    w.stop().await;
}
