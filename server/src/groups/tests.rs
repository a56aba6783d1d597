//! Group rules on the in-memory store: roles, membership changes as durable SYSTEM
//! messages, the owner's succession, the member cap.

use tern_proto::pb::{self, ErrorCode, Role};

use crate::testkit::World;

fn create(name: &str, members: &[&str]) -> pb::CreateGroup {
    pb::CreateGroup {
        name: name.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
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
