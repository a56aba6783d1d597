//! Account rules on the in-memory store and a manual clock: tokens expire by the clock,
//! revocation is per device or per user, wrong credentials say nothing about which part
//! was wrong.

use tern_proto::pb::ErrorCode;

use crate::accounts::{Authed, Refused};
use crate::testkit::World;

async fn resume(w: &World, token: &str) -> Result<Authed, Refused> {
    w.accounts.resume(token, |_, _| Ok(())).await
}

#[tokio::test]
async fn register_login_resume_and_a_token_that_expires_by_the_clock() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let e = w.accounts.register("ann", "password-2").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UserExists);

    let a = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    assert_eq!((a.user.as_str(), a.device.as_str()), ("ann", "phone"));
    assert_eq!(
        a.expires_ms,
        w.clock.now() + 3600 * 1000,
        "TTL from the clock"
    );
    let again = resume(&w, &a.token).await.unwrap();
    assert_eq!(again.device, "phone");

    w.clock.advance(3600 * 1000 + 1);
    let e = resume(&w, &a.token).await.unwrap_err();
    assert_eq!(e.error.code, ErrorCode::TokenExpired);
    w.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let wrong = w.accounts.login("ann", "nope-nope", "d").await.unwrap_err();
    let unknown = w
        .accounts
        .login("zed", "password-1", "d")
        .await
        .unwrap_err();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.code, ErrorCode::InvalidCredentials);
    let e = w
        .accounts
        .login("ann", "password-1", "bad device")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.stop().await;
}

#[tokio::test]
async fn revoking_a_device_ends_its_tokens_only_and_revoking_the_user_ends_all() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let phone = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    let laptop = w
        .accounts
        .login("ann", "password-1", "laptop")
        .await
        .unwrap();
    w.accounts.revoke("ann", Some("phone")).await.unwrap();
    assert_eq!(
        resume(&w, &phone.token).await.unwrap_err().error.code,
        ErrorCode::TokenRevoked
    );
    resume(&w, &laptop.token).await.unwrap();
    // A new login of the revoked device works again.
    let phone2 = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    resume(&w, &phone2.token).await.unwrap();
    assert_eq!(
        w.accounts
            .revoke("ann", Some("tablet"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );

    w.accounts.revoke("ann", None).await.unwrap();
    for t in [&laptop.token, &phone2.token] {
        assert_eq!(
            resume(&w, t).await.unwrap_err().error.code,
            ErrorCode::TokenRevoked
        );
    }
    w.stop().await;
}

#[tokio::test]
async fn resume_rotates_and_a_rotated_out_token_revokes_its_device_only() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let login = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    let laptop = w
        .accounts
        .login("ann", "password-1", "laptop")
        .await
        .unwrap();
    let t1 = resume(&w, &login.token).await.unwrap();
    assert_ne!(t1.token, login.token);
    // The answer was lost: the login token works again (grace), with another answer.
    let t1b = resume(&w, &login.token).await.unwrap();
    assert_ne!(t1b.token, t1.token);
    // t1 is used: the login token and the other answer are rotated out.
    let t2 = resume(&w, &t1.token).await.unwrap();
    let e = resume(&w, &t1b.token).await.unwrap_err();
    assert_eq!(e.error.code, ErrorCode::TokenRevoked);
    assert_eq!(e.reused, Some(("ann".to_string(), "phone".to_string())));
    // Every token of the phone is revoked now, the newest too; no second alarm.
    for t in [&t2.token, &login.token, &t1.token] {
        let e = resume(&w, t).await.unwrap_err();
        assert_eq!((e.error.code, e.reused), (ErrorCode::TokenRevoked, None));
    }
    // The laptop is another device: untouched.
    resume(&w, &laptop.token).await.unwrap();
    // The password still works for the phone.
    let again = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    resume(&w, &again.token).await.unwrap();
    w.stop().await;
}

#[tokio::test]
async fn the_grace_for_the_last_resumed_token_ends_with_the_clock() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let login = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    let t1 = resume(&w, &login.token).await.unwrap();
    // t1's answer is lost, repeatedly: the grace counts from the first use of t1.
    resume(&w, &t1.token).await.unwrap();
    w.clock.advance(299_000);
    resume(&w, &t1.token).await.unwrap();
    w.clock.advance(1_000);
    let e = resume(&w, &t1.token).await.unwrap_err();
    assert_eq!(e.error.code, ErrorCode::TokenRevoked);
    assert!(e.reused.is_some());
    w.stop().await;
}

#[tokio::test]
async fn a_refused_admission_leaves_the_token_as_it_was() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let login = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    let t1 = resume(&w, &login.token).await.unwrap();
    let busy = |_: &str, _: &str| {
        Err(crate::error::ServiceError::new(
            ErrorCode::ResourceExhausted,
            "full",
        ))
    };
    for _ in 0..3 {
        let e = w.accounts.resume(&t1.token, busy).await.unwrap_err();
        assert_eq!(e.error.code, ErrorCode::ResourceExhausted);
    }
    // Long after: t1 was never used, so it is still the one to use.
    w.clock.advance(3_000_000);
    resume(&w, &t1.token).await.unwrap();
    w.stop().await;
}
